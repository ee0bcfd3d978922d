/**
 * The chunk table of one device in a taken snapshot: every chunk's state and
 * difference-storage offset in typed arrays over one SharedArrayBuffer.
 *
 * Design note (the cow filter of nbdkit keeps a 2-bit entry per block in one
 * bitmap, filters/cow/blk.c): 9 bytes per chunk, a Float64 offset and a state
 * byte (chunk.ts CHUNK_ST_*), allocated zeroed at take, so a fresh table is
 * all NEW and untouched pages cost nothing until written. The offset is
 * meaningful once the chunk is STORED: it is written before the state turns
 * STORED, also when a chunk goes NEW -> STORED directly (a kernel copy, see
 * diff_area.ts). Only the owner of the engine writes the table; the buffer
 * is shared so that other threads can read it.
 * {@link ChunkTable.runEnd} finds runs of chunks in one state, so image reads
 * and extents handle a run at a time (blk_read_multiple).
 *
 * @module
 */

import { CHUNK_ST_NEW } from "./chunk.ts";
import type { Sizing } from "./params.ts";

/** Bytes of table per chunk: an 8-byte offset and a state byte. */
export const CHUNK_TABLE_BYTES_PER_CHUNK = 9;

/** States and storage offsets of a device's chunks. */
export class ChunkTable {
  /** Power of 2 of the chunk size. */
  readonly shift: number;
  /** Chunk size in bytes. */
  readonly chunkSizeBytes: number;
  /** Chunks covering the device (the last may be short). */
  readonly count: number;
  /** Device capacity at take, in bytes. */
  readonly capacityBytes: number;
  /** The memory behind both arrays (offsets first, then states). */
  readonly buffer: SharedArrayBuffer;
  /** One CHUNK_ST_* byte per chunk. */
  readonly states: Uint8Array;
  /** Byte offset of each STORED chunk in the difference storage. */
  readonly diffOffsets: Float64Array;

  /** A table of NEW chunks for `capacityBytes` cut by `sizing`. */
  constructor(capacityBytes: number, sizing: Sizing) {
    this.shift = sizing.shift;
    this.chunkSizeBytes = 2 ** sizing.shift;
    this.count = sizing.count;
    this.capacityBytes = capacityBytes;
    this.buffer = new SharedArrayBuffer(sizing.count * CHUNK_TABLE_BYTES_PER_CHUNK);
    this.diffOffsets = new Float64Array(this.buffer, 0, sizing.count);
    this.states = new Uint8Array(this.buffer, sizing.count * 8, sizing.count);
  }

  /** The chunk holding byte `offsetBytes`. */
  indexOf(offsetBytes: number): number {
    return Math.floor(offsetBytes / this.chunkSizeBytes);
  }

  /** Bytes in chunk `index` (the last may be short). */
  sizeOf(index: number): number {
    return Math.min(this.chunkSizeBytes, this.capacityBytes - index * this.chunkSizeBytes);
  }

  /** The first chunk after `first` (at most `last + 1`) whose state differs from `first`'s. */
  runEnd(first: number, last: number): number {
    const states = this.states;
    const state = states[first];
    let next = first + 1;
    while (next <= last && states[next] === state) next++;
    return next;
  }

  /** True when a chunk from `first` to `last` is still NEW. */
  anyNew(first: number, last: number): boolean {
    const states = this.states;
    for (let index = first; index <= last; index++) {
      if (states[index] === CHUNK_ST_NEW) return true;
    }
    return false;
  }
}
