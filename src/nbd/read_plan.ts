/**
 * Which parts of a structured READ reply go as data and which as holes:
 * from the `base:allocation` extents the export reports, zero extents of at
 * least 4 KiB become NBD_REPLY_TYPE_OFFSET_HOLE chunks (smaller ones are not
 * worth a chunk header and are read as data); neighbours of the same kind
 * merge; whatever the extents do not cover is data.
 *
 * @module
 */

import { NBD_STATE_ZERO } from "./constants.ts";
import type { NbdExtent } from "./export.ts";

/** Zero extents shorter than this are sent as data, not as holes. */
const MIN_HOLE_BYTES = 4096;

/** A piece of a READ reply: data from the buffer, or a hole that reads as zeroes. */
export interface ReadRun {
  /** Offset in the export, in bytes. */
  offset: number;
  /** Length in bytes. */
  length: number;
  /** True when the run is sent as NBD_REPLY_TYPE_OFFSET_HOLE. */
  hole: boolean;
}

/**
 * The runs covering `[offset, offset + length)` given the extents reported
 * from `offset`, or undefined when there is no hole worth sending.
 */
export function planRead(
  extents: NbdExtent[],
  range: { offset: number; length: number },
): ReadRun[] | undefined {
  const runs: ReadRun[] = [];
  const end = range.offset + range.length;
  let position = range.offset;
  for (const extent of extents) {
    if (position >= end || !(extent.length > 0)) break;
    const length = Math.min(extent.length, end - position);
    const hole = (extent.flags & NBD_STATE_ZERO) !== 0 && length >= MIN_HOLE_BYTES;
    add(runs, { offset: position, length, hole });
    position += length;
  }
  if (position < end) add(runs, { offset: position, length: end - position, hole: false });
  return runs.some((run) => run.hole) ? runs : undefined;
}

function add(runs: ReadRun[], run: ReadRun): void {
  const last = runs[runs.length - 1];
  if (last !== undefined && last.hole === run.hole) last.length += run.length;
  else runs.push(run);
}
