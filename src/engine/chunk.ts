/**
 * A chunk: the copy-on-write unit of one device in a snapshot.
 *
 * Design note (seed 003_3b7a49106c620ab4.txt, chunk.h): states NEW (no data
 * kept), IN_MEMORY (the original data sits in a buffer, queued for storing),
 * STORED (the data is in the difference storage at `diffOffsetBytes`) and
 * FAILED (processing failed; the snapshot is corrupted). A chunk never goes
 * back to NEW, which lets the copy-on-write path skip non-NEW chunks without
 * taking their lock. The per-chunk lock serialises state changes and any I/O
 * that depends on the state. The last chunk of a device may be short;
 * storage space is always allocated for a full chunk.
 *
 * @module
 */

import { Mutex } from "./mutex.ts";

/** The life of a chunk (the kernel's CHUNK_ST_*). */
export const ChunkState = {
  /** CHUNK_ST_NEW: nothing copied; image reads go to the original. */
  NEW: "NEW",
  /** CHUNK_ST_IN_MEMORY: the chunk's data is in a buffer, queued for storing. */
  IN_MEMORY: "IN_MEMORY",
  /** CHUNK_ST_STORED: the chunk's data is in the difference storage. */
  STORED: "STORED",
  /** CHUNK_ST_FAILED: loading or storing failed; the image is unusable here. */
  FAILED: "FAILED",
} as const;

/** One of {@link ChunkState}. */
export type ChunkStateName = typeof ChunkState[keyof typeof ChunkState];

/** One chunk of a device's difference area. */
export class Chunk {
  /** Chunk number (its index on the device). */
  readonly index: number;
  /** Byte offset of the chunk on the device. */
  readonly offsetBytes: number;
  /** Bytes in this chunk (the last chunk may be short). */
  readonly sizeBytes: number;
  /** Serialises state changes and state-dependent I/O. */
  readonly lock: Mutex = new Mutex();
  /** Current state. */
  state: ChunkStateName = ChunkState.NEW;
  /** The chunk's data while IN_MEMORY (a pool buffer of the full chunk size). */
  buffer: Uint8Array | undefined = undefined;
  /** Byte offset of the chunk's space in the difference storage, or -1 before allocation. */
  diffOffsetBytes = -1;

  /** A NEW chunk `index` covering `sizeBytes` bytes from `offsetBytes`. */
  constructor(index: number, offsetBytes: number, sizeBytes: number) {
    this.index = index;
    this.offsetBytes = offsetBytes;
    this.sizeBytes = sizeBytes;
  }
}
