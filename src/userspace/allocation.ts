/**
 * `base:allocation` of the userspace exports: where a tracked device and a
 * snapshot image hold data and where they read as zeroes.
 *
 * Design note:
 * - A device on a regular file reports the file's holes (file_allocation.ts);
 *   block devices and memory stores report everything as data, and say so
 *   ({@link storeAllocation} returns undefined), so that structured READs do
 *   not ask them for holes.
 * - An image: a chunk never copied (NEW) still has its data on the origin,
 *   unchanged since take by definition (the first write to it copies it
 *   first), so the origin's allocation there is the image's: a hole now was a
 *   hole at take, since writes through the tracker only ever allocate (TRIM
 *   changes nothing, zeroes are written as data). Copied chunks (IN_MEMORY,
 *   STORED, FAILED) are data. Runs of chunks in one state are asked for
 *   together, and a NEW run's answer is clipped to the run.
 * - Whether structured READs should ask at all ({@link holesPossible}): a
 *   file found fully allocated stays so while tracked (writes only allocate)
 *   until its size changes, so the answer "no holes" is kept for that size;
 *   reporting data over a hole is never wrong, only less sparse.
 *
 * @module
 */

import { CHUNK_ST_NEW } from "../engine/chunk.ts";
import type { BlockStore } from "../engine/block_store.ts";
import type { ChunkTable } from "../engine/chunk_table.ts";
import type { NbdExtent } from "../nbd/export.ts";
import { fileAllocation, MAX_ALLOCATION_EXTENTS } from "./file_allocation.ts";

/** The allocation of a byte range: extents covering it from its start (or fewer, never none). */
export type AllocationQuery = (offset: number, length: number) => NbdExtent[];

/**
 * The allocation query of `store` when it may have holes (a regular file
 * with an open descriptor), else undefined: everything is data.
 */
export function storeAllocation(store: BlockStore): AllocationQuery | undefined {
  const fd = (store as { fd?: unknown }).fd;
  if (store.identity.kind !== "file" || typeof fd !== "number") return undefined;
  return (offset, length) => fileAllocation(fd, { offset, length, sizeBytes: store.capacityBytes });
}

/** How many calls {@link holesPossible} answers "yes" before it looks again. */
const HOLE_RECHECK_CALLS = 1024;

/**
 * Whether the file behind `store` (queried by `query`) may still have holes:
 * false once it is fully allocated at its current size, re-examined when the
 * size changes and, while it has holes, every {@link HOLE_RECHECK_CALLS} calls.
 */
export function holesPossible(store: BlockStore, query: AllocationQuery): () => boolean {
  let checkedSize = -1;
  let holes = true;
  let calls = 0;
  return () => {
    const size = store.capacityBytes;
    if (size === checkedSize && (!holes || ++calls < HOLE_RECHECK_CALLS)) return holes;
    const [first] = query(0, size);
    holes = size > 0 && !(first !== undefined && first.flags === 0 && first.length >= size);
    checkedSize = size;
    calls = 0;
    return holes;
  };
}

function push(extents: NbdExtent[], length: number, flags: number): void {
  const last = extents[extents.length - 1];
  if (last !== undefined && last.flags === flags) last.length += length;
  else extents.push({ length, flags });
}

/**
 * The allocation of `length` bytes from `offset` of an image whose chunks
 * are in `table`, over an origin answering `origin` (undefined: all data).
 */
export function imageAllocation(
  table: ChunkTable,
  origin: AllocationQuery | undefined,
  range: { offset: number; length: number },
): NbdExtent[] {
  const end = Math.min(range.offset + range.length, table.capacityBytes);
  if (range.offset >= end) return [{ length: Math.max(1, range.length), flags: 0 }];
  if (origin === undefined) return [{ length: end - range.offset, flags: 0 }];
  const extents: NbdExtent[] = [];
  const last = table.indexOf(end - 1);
  let position = range.offset;
  while (position < end && extents.length < MAX_ALLOCATION_EXTENTS) {
    const first = table.indexOf(position);
    const next = table.runEnd(first, last);
    const runEnd = Math.min(next * table.chunkSizeBytes, end);
    if (table.states[first] !== CHUNK_ST_NEW) {
      push(extents, runEnd - position, 0);
      position = runEnd;
      continue;
    }
    for (const extent of origin(position, runEnd - position)) {
      const length = Math.min(extent.length, runEnd - position);
      if (length <= 0) break;
      push(extents, length, extent.flags);
      position += length;
    }
  }
  return extents;
}
