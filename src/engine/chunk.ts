/**
 * Chunks: the copy-on-write unit of one device in a snapshot.
 *
 * Design note (seed 003_3b7a49106c620ab4.txt, chunk.h): states NEW (no data
 * kept), IN_MEMORY (the original data sits in a buffer, queued for storing),
 * STORED (the data is in the difference storage) and FAILED (processing
 * failed; the snapshot is corrupted). A chunk goes NEW -> IN_MEMORY ->
 * STORED, or NEW -> STORED directly when its original store copies it into
 * the difference storage itself (diff_area.ts). A chunk never goes back to NEW, which
 * lets the copy-on-write path skip non-NEW chunks without taking their lock.
 * The last chunk of a device may be short; storage space is always allocated
 * for a full chunk.
 *
 * State as data, objects only in flight: every chunk's state and storage
 * offset live in the device's {@link ChunkTable} (chunk_table.ts); a
 * {@link Chunk} object exists only while a chunk is in transition (locked for
 * a copy or an image write, or IN_MEMORY with its buffer), in the difference
 * area's transit map. Its lock serialises state changes and the image writes
 * that depend on the state.
 *
 * @module
 */

import { Mutex } from "./mutex.ts";

/** The life of a chunk (the kernel's CHUNK_ST_*), as names for reports. */
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

/** CHUNK_ST_NEW as stored in a chunk table (0, what a fresh table holds). */
export const CHUNK_ST_NEW = 0;
/** CHUNK_ST_IN_MEMORY as stored in a chunk table. */
export const CHUNK_ST_IN_MEMORY = 1;
/** CHUNK_ST_STORED as stored in a chunk table. */
export const CHUNK_ST_STORED = 2;
/** CHUNK_ST_FAILED as stored in a chunk table. */
export const CHUNK_ST_FAILED = 3;

const NAMES: readonly ChunkStateName[] = [
  ChunkState.NEW,
  ChunkState.IN_MEMORY,
  ChunkState.STORED,
  ChunkState.FAILED,
];

/** The name of a chunk table's state code. */
export function chunkStateName(code: number): ChunkStateName {
  return NAMES[code];
}

/** A chunk in transition: its lock and, while IN_MEMORY, its buffer. */
export class Chunk {
  /** Chunk number (its index on the device). */
  readonly index: number;
  /** Byte offset of the chunk on the device. */
  readonly offsetBytes: number;
  /** Bytes in this chunk (the last chunk may be short). */
  readonly sizeBytes: number;
  /** Serialises state changes and state-dependent image writes. */
  readonly lock: Mutex = new Mutex();
  /** The chunk's data while IN_MEMORY (a pool buffer of the full chunk size). */
  buffer: Uint8Array | undefined = undefined;

  /** Chunk `index` covering `sizeBytes` bytes from `offsetBytes`. */
  constructor(index: number, offsetBytes: number, sizeBytes: number) {
    this.index = index;
    this.offsetBytes = offsetBytes;
    this.sizeBytes = sizeBytes;
  }
}
