/**
 * From the extents an export reports to the descriptors of one
 * NBD_REPLY_TYPE_BLOCK_STATUS chunk, under the specification's rules:
 * consecutive extents with the same flags are merged; every descriptor is
 * non-empty and fits 32 bits; the descriptors stop once the requested length
 * is covered (the last may reach past it, never past the end of the export);
 * at most 2^20 descriptors; with NBD_CMD_FLAG_REQ_ONE exactly one, no longer
 * than the request. nbdkit's `extents_to_block_descriptors()` applies the
 * same rules.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import { Limits } from "./constants.ts";
import type { NbdExtent } from "./export.ts";

/** Longest descriptor: below 2^32 and a multiple of every allowed minimum block size. */
const MAX_DESCRIPTOR_BYTES = 0x100000000 - 0x10000;

/** The request a block status reply answers. */
export interface BlockStatusQuery {
  /** Start of the range, in bytes. */
  offset: number;
  /** Requested length in bytes (positive). */
  length: number;
  /** NBD_CMD_FLAG_REQ_ONE: exactly one descriptor, within `length`. */
  reqOne: boolean;
  /** Export size in bytes; no descriptor reaches past it. */
  exportSize: number;
}

/**
 * The descriptors (merged extents) answering `query` from `extents`.
 * Throws ServiceError INTERNAL when the export reported no usable extent or
 * an invalid one (length not a positive integer, flags not a u32).
 */
export function toDescriptors(extents: NbdExtent[], query: BlockStatusQuery): NbdExtent[] {
  const limit = query.exportSize - query.offset;
  const out: NbdExtent[] = [];
  let covered = 0;
  for (const extent of extents) {
    checkExtent(extent);
    const length = Math.min(extent.length, limit - covered);
    if (length <= 0) break;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === extent.flags) {
      last.length += length;
    } else {
      if (out.length === Limits.MAX_EXTENTS) break;
      out.push({ length, flags: extent.flags });
    }
    covered += length;
    const tail = out[out.length - 1];
    if (tail.length > MAX_DESCRIPTOR_BYTES) {
      covered -= tail.length - MAX_DESCRIPTOR_BYTES;
      tail.length = MAX_DESCRIPTOR_BYTES;
      break;
    }
    if (covered >= query.length) break;
  }
  if (out.length === 0) {
    throw new ServiceError(
      "INTERNAL",
      `Cannot answer block status at ${query.offset}: the export reported no extent`,
    );
  }
  if (query.reqOne) {
    return [{ length: Math.min(out[0].length, query.length), flags: out[0].flags }];
  }
  return out;
}

function checkExtent(extent: NbdExtent): void {
  const { length, flags } = extent;
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new ServiceError("INTERNAL", `Cannot answer block status: extent length ${length}`);
  }
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffffffff) {
    throw new ServiceError("INTERNAL", `Cannot answer block status: extent flags ${flags}`);
  }
}
