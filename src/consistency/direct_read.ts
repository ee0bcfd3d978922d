/**
 * One read of a block device that bypasses the page cache: `open(path,
 * O_RDONLY | O_DIRECT)`, `pread` into a buffer aligned to 4096 bytes,
 * `close`. With O_DIRECT the kernel sends the read to the device even when
 * the page cache holds those blocks, which is what a read probe needs
 * (src/consistency/nbd_read_probe.ts). The device is never opened for
 * writing.
 *
 * The three calls are nonblocking FFI symbols (they run on Deno's blocking
 * thread pool): for a /dev/nbdX connected to this very service, the read is
 * answered by the NBD server on this thread, which a blocking call would
 * starve. libc is opened lazily, on the first read.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import { LIBC_PATH, OpenFlags } from "../kernel/libc.ts";

/** `O_DIRECT` (x86_64). */
const O_DIRECT = 0o40000;
/** Alignment of the buffer, offset and length (enough for any logical block size). */
export const DIRECT_ALIGNMENT = 4096;

const symbols = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32", nonblocking: true },
  pread: { parameters: ["i32", "pointer", "usize", "i64"], result: "isize", nonblocking: true },
  close: { parameters: ["i32"], result: "i32", nonblocking: true },
} as const;

let library: Deno.DynamicLibrary<typeof symbols> | undefined;
/** Buffers a pread on the pool thread writes into: referenced here until it returns. */
const lent = new Set<Uint8Array>();

/** Reads a block: `length` bytes at `offset` of the device at `path` (both aligned). */
export type ReadBlock = (path: string, offset: number, length: number) => Promise<void>;

/**
 * Reads `length` bytes at `offset` of `path` with O_DIRECT and drops them.
 * RangeError when `offset` or `length` is not a multiple of
 * {@link DIRECT_ALIGNMENT}; ServiceError UNAVAILABLE when a call fails (errno
 * is not known: it belongs to the pool thread that made the call).
 */
export async function directReadBlock(path: string, offset: number, length: number): Promise<void> {
  if (offset % DIRECT_ALIGNMENT !== 0 || length % DIRECT_ALIGNMENT !== 0 || length === 0) {
    throw new RangeError(`a direct read needs ${DIRECT_ALIGNMENT}-byte alignment`);
  }
  library ??= Deno.dlopen(LIBC_PATH, symbols);
  const c = library.symbols;
  const fd = await c.open(
    new TextEncoder().encode(`${path}\0`),
    OpenFlags.O_RDONLY | OpenFlags.O_CLOEXEC | O_DIRECT,
    0,
  );
  if (fd < 0) throw new ServiceError("UNAVAILABLE", `Cannot open ${path} for a direct read`);
  const space = new Uint8Array(length + DIRECT_ALIGNMENT);
  lent.add(space);
  try {
    const base = Deno.UnsafePointer.value(Deno.UnsafePointer.of(space));
    const skip = (DIRECT_ALIGNMENT - Number(BigInt(base) % BigInt(DIRECT_ALIGNMENT))) %
      DIRECT_ALIGNMENT;
    const aligned = Deno.UnsafePointer.offset(Deno.UnsafePointer.of(space)!, skip);
    const read = await c.pread(fd, aligned, BigInt(length), BigInt(offset));
    if (Number(read) < 0) {
      throw new ServiceError("UNAVAILABLE", `Cannot read ${path} at ${offset} directly`);
    }
  } finally {
    lent.delete(space);
    await c.close(fd);
  }
}
