/**
 * Preallocation of a regular file's new part with `fallocate(2)` through
 * FFI, so that a full file system shows up when a store grows (ENOSPC, as
 * the difference storage's limit does) and not later as a failed write.
 * libc is opened for the call and closed again: growing is rare (one step of
 * the difference storage's minimum at a time). {@link preallocateOffThread}
 * makes the call on one of Deno's blocking threads (allocating 1 GiB of
 * tmpfs takes about a quarter of a second, which would stall the event
 * loop), in slices of {@link PREALLOCATE_SLICE_BYTES}: the file system holds
 * the file's lock for a whole call (tmpfs does), and writes to the file
 * queue behind it, so slices keep them waiting a few milliseconds at most.
 * errno cannot be read from that thread, so a failed call is made again on
 * the calling thread (allocating allocated space changes nothing) to learn it.
 *
 * @module
 */

const EOPNOTSUPP = 95;
const ENOSYS = 38;
const ENOSPC = 28;
const EINTR = 4;

const symbols = {
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  fallocate_async: {
    name: "fallocate",
    parameters: ["i32", "i32", "i64", "i64"],
    result: "i32",
    nonblocking: true,
  },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** libc with {@link symbols}, or undefined without FFI (the caller closes it). */
function openLibc(): Deno.DynamicLibrary<typeof symbols> | undefined {
  try {
    return Deno.dlopen("libc.so.6", symbols);
  } catch {
    return undefined;
  }
}

/** Bytes allocated per call by {@link preallocateOffThread}. */
export const PREALLOCATE_SLICE_BYTES = 8 << 20;

/** Outcome of {@link preallocate}. */
export type PreallocateResult = "allocated" | "unsupported";

/**
 * Allocates bytes `[offset, offset + length)` of the file open as `fd`
 * (mode 0: the file size grows to cover them). "unsupported" when the file
 * system (or FFI) cannot; throws an Error with `code` "ENOSPC" when the file
 * system is full, or with the errno name's number for other failures.
 */
export function preallocate(fd: number, offset: number, length: number): PreallocateResult {
  const library = openLibc();
  if (library === undefined) return "unsupported";
  try {
    for (;;) {
      const result = library.symbols.fallocate(fd, 0, BigInt(offset), BigInt(length));
      if (result === 0) return "allocated";
      const location = library.symbols.__errno_location();
      const errno = location === null ? 0 : new Deno.UnsafePointerView(location).getInt32();
      if (errno === EINTR) continue;
      if (errno === EOPNOTSUPP || errno === ENOSYS) return "unsupported";
      const code = errno === ENOSPC ? "ENOSPC" : `errno ${errno}`;
      throw Object.assign(
        new Error(`fallocate of ${length} bytes at ${offset} failed (${code})`),
        { code: errno === ENOSPC ? "ENOSPC" : undefined, errno },
      );
    }
  } finally {
    library.close();
  }
}

/**
 * As {@link preallocate} of `range.length` bytes at `range.offset`, but
 * allocating on another thread: the event loop goes on meanwhile. Resolves
 * and rejects as {@link preallocate}.
 */
export async function preallocateOffThread(
  fd: number,
  range: { offset: number; length: number },
): Promise<PreallocateResult> {
  const { offset, length } = range;
  const library = openLibc();
  if (library === undefined) return "unsupported";
  try {
    for (let done = 0; done < length; done += PREALLOCATE_SLICE_BYTES) {
      const slice = Math.min(PREALLOCATE_SLICE_BYTES, length - done);
      const at = BigInt(offset + done);
      const result = await library.symbols.fallocate_async(fd, 0, at, BigInt(slice));
      if (result !== 0) return preallocate(fd, offset + done, length - done);
    }
    return "allocated";
  } finally {
    library.close();
  }
}
