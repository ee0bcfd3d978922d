/**
 * Preallocation of a regular file's new part with `fallocate(2)` through
 * FFI, so that a full file system shows up when a store grows (ENOSPC, as
 * the difference storage's limit does) and not later as a failed write.
 * libc is opened for the call and closed again: growing is rare (one step of
 * the difference storage's minimum at a time).
 *
 * @module
 */

const EOPNOTSUPP = 95;
const ENOSYS = 38;
const ENOSPC = 28;
const EINTR = 4;

const symbols = {
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** Outcome of {@link preallocate}. */
export type PreallocateResult = "allocated" | "unsupported";

/**
 * Allocates bytes `[offset, offset + length)` of the file open as `fd`
 * (mode 0: the file size grows to cover them). "unsupported" when the file
 * system (or FFI) cannot; throws an Error with `code` "ENOSPC" when the file
 * system is full, or with the errno name's number for other failures.
 */
export function preallocate(fd: number, offset: number, length: number): PreallocateResult {
  let library: Deno.DynamicLibrary<typeof symbols>;
  try {
    library = Deno.dlopen("libc.so.6", symbols);
  } catch {
    return "unsupported";
  }
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
