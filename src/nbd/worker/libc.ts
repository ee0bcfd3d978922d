/**
 * The libc calls of the blocking Worker plane (DATA-PLANE.md shape B):
 * sockets, poll, positioned file I/O, splice and eventfd through FFI. Each call
 * blocks only the thread (Worker) that makes it. Opened lazily (importing
 * this module opens nothing); needs --allow-ffi. Linux x86_64 and aarch64
 * layouts (struct sockaddr_in/_un, struct pollfd, struct stat on x86_64 only,
 * see {@link fileIdentity}).
 *
 * @module
 */

const symbols = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  splice: { parameters: ["i32", "pointer", "i32", "pointer", "usize", "u32"], result: "isize" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** The opened calls. */
export type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];

/** errno values the plane acts on. */
export const Errno = { EINTR: 4, EIO: 5, EAGAIN: 11, EINVAL: 22 } as const;

/** Flags and constants of the calls above (Linux). */
export const Sys = {
  AF_UNIX: 1,
  AF_INET: 2,
  SOCK_STREAM: 1,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_REUSEADDR: 2,
  IPPROTO_TCP: 6,
  TCP_NODELAY: 1,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_MORE: 0x8000,
  POLLIN: 1,
  POLLOUT: 4,
  O_RDONLY: 0,
  O_RDWR: 2,
  O_CLOEXEC: 0o2000000,
  O_NONBLOCK: 0o4000,
  F_SETPIPE_SZ: 1031,
  F_GETPIPE_SZ: 1032,
  EFD_NONBLOCK: 0o4000,
  EFD_CLOEXEC: 0o2000000,
  SHUT_WR: 1,
} as const;

let opened: Libc | undefined;

/** libc, opened on first use (once per thread). */
export function libc(): Libc {
  opened ??= Deno.dlopen("libc.so.6", symbols).symbols;
  return opened;
}

/** The calling thread's errno; read it in the statement right after the failed call. */
export function errno(): number {
  const location = libc().__errno_location();
  return location === null ? 0 : new Deno.UnsafePointerView(location).getInt32();
}

/** A NUL-terminated C string. */
export function cString(text: string): Uint8Array {
  return new TextEncoder().encode(`${text}\0`);
}

/** An Error naming the failed call and its errno. */
export function sysError(call: string, code = errno()): Error & { errno: number } {
  return Object.assign(new Error(`${call} failed with errno ${code}`), { errno: code });
}

/** Device and inode of an open descriptor, compared with a store's identity. */
export interface FileIdentity {
  /** st_dev. */
  device: number;
  /** st_ino. */
  inode: number;
  /** st_rdev (block devices). */
  rdev: number;
  /** True for a block device. */
  block: boolean;
}

/**
 * fstat of `fd`; undefined on architectures whose struct stat layout is not
 * the x86_64 one (the caller then falls back to the owner's path).
 */
export function fileIdentity(fd: number): FileIdentity | undefined {
  if (Deno.build.arch !== "x86_64") return undefined;
  const stat = new BigUint64Array(18);
  if (libc().fstat(fd, new Uint8Array(stat.buffer)) !== 0) return undefined;
  const mode = Number(stat[3] & 0xffffffffn);
  return {
    device: Number(stat[0]),
    inode: Number(stat[1]),
    rdev: Number(stat[5]),
    block: (mode & 0o170000) === 0o060000,
  };
}
