/**
 * Where a regular file holds data and where it has holes, for the
 * `base:allocation` context: `lseek(SEEK_DATA)` and `lseek(SEEK_HOLE)`
 * through FFI, as nbdkit's file plugin answers extents.
 *
 * Design note: from the start of the range, SEEK_DATA finds the next data
 * (ENXIO: only a hole remains up to the end of the file) and SEEK_HOLE the
 * end of that data; holes read as zeroes (NBD_STATE_HOLE | NBD_STATE_ZERO),
 * data is reported with flags 0. At most {@link MAX_ALLOCATION_EXTENTS}
 * extents per call (NBD clients ask again from where the answer ended). A
 * file system without SEEK_HOLE support reports the whole file as data,
 * which is what lseek then answers too. libc is opened on first use (FFI
 * permission needed then, not at import); without it every range is data.
 * The calls are synchronous and cheap: they consult the file system's extent
 * tree, never the disk blocks.
 *
 * @module
 */

import { NBD_STATE_HOLE, NBD_STATE_ZERO } from "../nbd/constants.ts";
import type { NbdExtent } from "../nbd/export.ts";

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;
const HOLE = NBD_STATE_HOLE | NBD_STATE_ZERO;

/** The most extents one allocation query returns. */
export const MAX_ALLOCATION_EXTENTS = 1024;

const symbols = {
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let library: Deno.DynamicLibrary<typeof symbols> | undefined;
let unavailable = false;

function libc(): Deno.DynamicLibrary<typeof symbols>["symbols"] | undefined {
  if (library === undefined && !unavailable) {
    try {
      library = Deno.dlopen("libc.so.6", symbols);
    } catch {
      unavailable = true;
    }
  }
  return library?.symbols;
}

/** lseek's result, or -errno. */
function seek(fd: number, offset: number, whence: number): number {
  const lib = libc()!;
  const result = Number(lib.lseek(fd, BigInt(offset), whence));
  if (result >= 0) return result;
  const location = lib.__errno_location();
  return location === null ? -1 : -new Deno.UnsafePointerView(location).getInt32();
}

/**
 * The allocation of `length` bytes of the open regular file `fd` from
 * `offset`, whose size is `sizeBytes`: data (flags 0) and holes (HOLE |
 * ZERO), covering the range or stopping after {@link MAX_ALLOCATION_EXTENTS}
 * extents. Any lseek failure other than ENXIO reports the rest as data.
 */
export function fileAllocation(
  fd: number,
  range: { offset: number; length: number; sizeBytes: number },
): NbdExtent[] {
  const end = Math.min(range.offset + range.length, range.sizeBytes);
  if (range.offset >= end) return [{ length: Math.max(1, range.length), flags: 0 }];
  if (libc() === undefined) return [{ length: end - range.offset, flags: 0 }];
  const extents: NbdExtent[] = [];
  let position = range.offset;
  while (position < end && extents.length < MAX_ALLOCATION_EXTENTS) {
    const data = seek(fd, position, SEEK_DATA);
    if (data === -ENXIO || data >= end) {
      extents.push({ length: end - position, flags: HOLE });
      break;
    }
    if (data < 0) {
      extents.push({ length: end - position, flags: 0 });
      break;
    }
    if (data > position) {
      extents.push({ length: data - position, flags: HOLE });
      position = data;
      continue;
    }
    const hole = seek(fd, position, SEEK_HOLE);
    const stop = hole < 0 ? end : Math.min(Math.max(hole, position + 1), end);
    extents.push({ length: stop - position, flags: 0 });
    position = stop;
  }
  return extents;
}
