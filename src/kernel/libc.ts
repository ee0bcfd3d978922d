/**
 * The one libc table of the kernel backend and the {@link Libc} seam in front
 * of it, so that tests can put a fake kernel behind the same calls.
 *
 * `libc.so.6` is opened lazily, on the first call of a {@link realLibc}
 * method: importing this file (or `mod.ts`) needs no FFI permission and opens
 * nothing. `ioctl` and `open` are variadic in C; they are declared here with
 * fixed parameters (`i32 fd, u64 request, pointer arg` and `pointer path, i32
 * flags, u32 mode`), which is what the x86_64 calling convention passes for
 * them anyway. errno is thread-local: each wrapper reads it through
 * `__errno_location` in the statement right after the call, on the calling
 * thread, and only when the call returned -1.
 *
 * Buffers handed to these calls stay referenced by the caller until the call
 * returns (every call here is synchronous), and addresses taken with
 * {@link Libc.pointerOf} must be kept alive by the caller in the same way.
 *
 * @module
 */

import { i64le, struct } from "../layout/mod.ts";

/** The outcome of one system call: its return value and, when it failed, errno. */
export interface SyscallResult {
  /** The call's return value (-1 on failure). */
  result: number;
  /** errno when `result` is -1, else 0. */
  errno: number;
}

/** The libc calls the kernel backend makes. Implemented by {@link realLibc} and by test fakes. */
export interface Libc {
  /** `open(path, flags, 0)`: the new fd in `result`. */
  open(path: string, flags: number): SyscallResult;
  /** `close(fd)`. */
  close(fd: number): SyscallResult;
  /** `ioctl(fd, request, arg)`; the kernel reads and writes `arg` in place. */
  ioctl(fd: number, request: number, arg: Uint8Array): SyscallResult;
  /** The user-space address of `buffer`'s first byte (0 for an empty buffer). */
  pointerOf(buffer: Uint8Array): number;
  /** `CLOCK_MONOTONIC` in nanoseconds, the clock of the module's event time labels. */
  monotonicNs(): bigint;
  /** Major and minor number of the block device at `path`; undefined when it is not one. */
  blockDeviceNumber(path: string): DeviceNumber | undefined;
  /** The real path of what `fd` is open on (the `/proc/self/fd/N` link); undefined when unknown. */
  realPathOf(fd: number): string | undefined;
}

/** A device number split into its parts. */
export interface DeviceNumber {
  /** Major number. */
  major: number;
  /** Minor number. */
  minor: number;
}

/** Splits a Linux `dev_t` (glibc's encoding) into major and minor. */
export function splitDeviceNumber(rdev: number): DeviceNumber {
  const value = BigInt(rdev);
  const major = Number(((value >> 8n) & 0xfffn) | ((value >> 32n) & ~0xfffn));
  const minor = Number((value & 0xffn) | ((value >> 12n) & ~0xffn));
  return { major, minor };
}

/** `open()` flags (x86_64). */
export const OpenFlags = {
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_NONBLOCK: 0o4000,
  O_NOFOLLOW: 0o400000,
  O_CLOEXEC: 0o2000000,
  O_PATH: 0o10000000,
} as const;

/** The library the real {@link Libc} and the event worker open. */
export const LIBC_PATH = "libc.so.6";

const CLOCK_MONOTONIC = 1;

/** `struct timespec` on x86_64. */
const Timespec = struct({ tv_sec: i64le, tv_nsec: i64le });

const symbols = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

type LibcSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

let library: Deno.DynamicLibrary<typeof symbols> | undefined;

function libcSymbols(): LibcSymbols {
  library ??= Deno.dlopen(LIBC_PATH, symbols);
  return library.symbols;
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `text` for C. */
export function cStringBytes(text: string): Uint8Array {
  const encoded = encoder.encode(text);
  if (encoded.includes(0)) throw new RangeError(`"${text}" contains a NUL byte`);
  const out = new Uint8Array(encoded.length + 1);
  out.set(encoded);
  return out;
}

function readErrno(lib: LibcSymbols): number {
  const location = lib.__errno_location();
  if (location === null) return 0;
  return new Deno.UnsafePointerView(location).getInt32();
}

const real: Libc = {
  open(path, flags) {
    const lib = libcSymbols();
    const pathBytes = cStringBytes(path);
    const result = lib.open(pathBytes, flags, 0);
    const errno = result === -1 ? readErrno(lib) : 0;
    return { result, errno };
  },
  close(fd) {
    const lib = libcSymbols();
    const result = lib.close(fd);
    const errno = result === -1 ? readErrno(lib) : 0;
    return { result, errno };
  },
  ioctl(fd, request, arg) {
    const lib = libcSymbols();
    const result = lib.ioctl(fd, BigInt(request), arg);
    const errno = result === -1 ? readErrno(lib) : 0;
    return { result, errno };
  },
  pointerOf(buffer) {
    if (buffer.byteLength === 0) return 0;
    return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
  },
  monotonicNs() {
    const lib = libcSymbols();
    const spec = new Uint8Array(Timespec.size);
    const result = lib.clock_gettime(CLOCK_MONOTONIC, spec);
    if (result !== 0) throw new Error(`clock_gettime failed (errno ${readErrno(lib)})`);
    const { tv_sec, tv_nsec } = Timespec.decode(spec);
    return BigInt(tv_sec) * 1_000_000_000n + BigInt(tv_nsec);
  },
  realPathOf(fd) {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return undefined;
    }
  },
  blockDeviceNumber(path) {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(path);
    } catch {
      return undefined;
    }
    if (!info.isBlockDevice || info.rdev === null) return undefined;
    return splitDeviceNumber(info.rdev);
  },
};

/**
 * The process's libc behind the {@link Libc} interface. Nothing is opened
 * until the first call; the library then stays open for the process's life.
 */
export function realLibc(): Libc {
  return real;
}
