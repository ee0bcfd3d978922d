/**
 * The snapshot image of one device: the device as it was at take, plus the
 * writes made to the image when the snapshot is writable.
 *
 * Design note (seed 003 diff_area_submit_chunk; the kernel's snapimage.c,
 * not among the seeds, marks both CBT tables for image writes before the
 * data goes to the difference area):
 * - Reads go in runs of chunks in one state (nbdkit's cow filter,
 *   blk_read_multiple), taking no lock and allocating nothing for chunks
 *   never copied: a NEW run is read from the original in one call, then its
 *   states are checked again, and every chunk that left NEW meanwhile is read
 *   again from where its data went. That is exact because copy-on-write
 *   publishes IN_MEMORY (or STORED, for a chunk copied straight into the
 *   difference storage) before the write to the original is issued (the
 *   kernel holds the chunk lock instead). IN_MEMORY chunks are copied from
 *   their buffer, STORED ones read from the difference storage; FAILED or a
 *   corrupted area gives SNAPSHOT_CORRUPTED. A stored chunk that cannot be
 *   read back (a short read: the storage was truncated) corrupts the area
 *   with EIO: its data is lost, never zeros. Unlike the kernel, a read also
 *   fails when the area became corrupted while it read: after corruption,
 *   writes to the original skip copy-on-write and could have changed what a
 *   NEW chunk read returned.
 * - Writes (writable snapshots), one chunk at a time under its lock: NEW ->
 *   load the original, apply, IN_MEMORY, queue; IN_MEMORY -> into the
 *   buffer; STORED -> into the storage. A write marks both CBT tables
 *   (setBoth); when the map is corrupted that marking is skipped rather than
 *   failing the write, since the next take resets the map anyway.
 *
 * @module
 */

import { Errno, ServiceError } from "../errors.ts";
import type { BlockStore } from "./block_store.ts";
import type { CbtMap } from "./cbt_map.ts";
import { CHUNK_ST_IN_MEMORY, CHUNK_ST_NEW, CHUNK_ST_STORED, type ChunkStateName } from "./chunk.ts";
import type { DiffArea } from "./diff_area.ts";

/** Block-level view of one chunk of an image. */
export interface ImageChunkInfo {
  /** Chunk state: NEW means the image still reads the original there. */
  state: ChunkStateName;
  /** First byte of the chunk. */
  offsetBytes: number;
  /** Bytes in the chunk (the last may be short). */
  lengthBytes: number;
}

/** Options of a {@link SnapshotImage}. */
export interface SnapshotImageOptions {
  /** The device's CBT map (image writes mark both tables). */
  cbt: CbtMap;
  /** Whether writes are accepted. */
  writable: boolean;
  /** Resolves once the device's CBT marks are on stable storage (its write intent); default at once. */
  marksDurable?: () => Promise<void>;
}

/** Read (and, when writable, write) access to one device's snapshot image. */
export class SnapshotImage {
  /** The device's name. */
  readonly trackerName: string;
  /** Image size in bytes (the device's capacity at take). */
  readonly sizeBytes: number;
  /** Whether writes are accepted. */
  readonly writable: boolean;
  /** Chunk size of the image in bytes. */
  readonly chunkSizeBytes: number;
  #cbt: CbtMap;
  #area: DiffArea;
  #marksDurable: (() => Promise<void>) | undefined;

  /** The image served by `area` (engine use). */
  constructor(area: DiffArea, options: SnapshotImageOptions) {
    this.trackerName = area.name;
    this.sizeBytes = area.capacityBytes;
    this.chunkSizeBytes = area.chunkSizeBytes;
    this.writable = options.writable;
    this.#cbt = options.cbt;
    this.#area = area;
    this.#marksDurable = options.marksDurable;
  }

  /** The difference area behind the image (engine use: extents, diagnostics). */
  get diffArea(): DiffArea {
    return this.#area;
  }

  #checkRange(action: string, offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) || offset < 0 || offset + length > this.sizeBytes
    ) {
      throw new ServiceError(
        "OUT_OF_RANGE",
        `Cannot ${action} ${length} bytes at ${offset} of the snapshot image of ` +
          `${this.trackerName}: the image holds ${this.sizeBytes} bytes`,
      );
    }
  }

  async #storeIo(
    kind: "read" | "write",
    store: BlockStore,
    offset: number,
    piece: Uint8Array,
  ): Promise<void> {
    try {
      if (kind === "read") await store.read(offset, piece);
      else await store.write(offset, piece);
    } catch (error) {
      // A stored chunk that cannot be read back (or written) is lost: the snapshot is corrupted,
      // and this request fails as every later one will.
      if (store === this.#area.storage.store) {
        this.#area.setCorrupted(Errno.EIO);
        throw this.#area.corruptedError(kind);
      }
      throw new ServiceError(
        "IO",
        `Cannot ${kind} the snapshot image of ${this.trackerName}: ${kind} of ${piece.length} ` +
          `bytes at ${offset} on ${store.name} failed`,
        { cause: error },
      );
    }
  }

  /**
   * Reads `into.length` bytes from `offset`. OUT_OF_RANGE past the end;
   * SNAPSHOT_CORRUPTED (errno EIO) once the snapshot is corrupted; IO when a
   * store fails; UNAVAILABLE once the snapshot is destroyed.
   */
  async read(offset: number, into: Uint8Array): Promise<void> {
    this.#checkRange("read", offset, into.length);
    const area = this.#area;
    area.beginImageIo("read");
    try {
      if (into.length > 0 && area.isCorrupted) throw area.corruptedError("read");
      const table = area.table;
      const end = offset + into.length;
      const last = table.indexOf(end - 1);
      let position = offset;
      while (position < end) {
        const first = table.indexOf(position);
        const next = table.runEnd(first, last);
        const runEnd = Math.min(next * table.chunkSizeBytes, end);
        const piece = into.subarray(position - offset, runEnd - offset);
        if (table.states[first] === CHUNK_ST_NEW) {
          await this.#storeIo("read", area.original, position, piece);
          await this.#rereadLeftNew(first, next, position, piece);
        } else {
          for (let index = first; index < next; index++) {
            await this.#readCopied(index, position, piece);
          }
        }
        position = runEnd;
      }
      if (into.length > 0 && area.isCorrupted) throw area.corruptedError("read");
      area.stats.imageReads += 1;
    } finally {
      area.endImageIo();
    }
  }

  /** After a NEW run was read from the original: reads again each chunk that left NEW meanwhile. */
  async #rereadLeftNew(first: number, next: number, from: number, run: Uint8Array): Promise<void> {
    const states = this.#area.table.states;
    for (let index = first; index < next; index++) {
      if (states[index] !== CHUNK_ST_NEW) await this.#readCopied(index, from, run);
    }
  }

  /** Reads the part of copied chunk `index` in `run` (image bytes from `runFrom`) from its buffer or the storage. */
  async #readCopied(index: number, runFrom: number, run: Uint8Array): Promise<void> {
    const area = this.#area;
    const table = area.table;
    const chunkStart = index * table.chunkSizeBytes;
    const from = Math.max(chunkStart, runFrom);
    const to = Math.min(chunkStart + table.sizeOf(index), runFrom + run.length);
    const piece = run.subarray(from - runFrom, to - runFrom);
    const state = table.states[index];
    if (state === CHUNK_ST_IN_MEMORY) {
      const buffer = area.bufferOf(index)!;
      piece.set(buffer.subarray(from - chunkStart, to - chunkStart));
    } else if (state === CHUNK_ST_STORED) {
      const at = table.diffOffsets[index] + from - chunkStart;
      await this.#storeIo("read", area.storage.store, at, piece);
    } else {
      throw area.corruptedError("read");
    }
  }

  /**
   * Writes `data` at `offset` and marks both CBT tables. READ_ONLY unless the
   * snapshot is writable; other errors as {@link SnapshotImage.read}.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (!this.writable) {
      throw new ServiceError(
        "READ_ONLY",
        `Cannot write to the snapshot image of ${this.trackerName}: the snapshot is read-only`,
      );
    }
    this.#checkRange("write", offset, data.length);
    if (data.length === 0) return;
    if (!this.#cbt.isCorrupted) this.#cbt.markBoth(offset, data.length);
    if (this.#marksDurable !== undefined) await this.#marksDurable();
    const area = this.#area;
    area.beginImageIo("write");
    try {
      const size = area.chunkSizeBytes;
      for (let done = 0; done < data.length;) {
        const position = offset + done;
        const index = Math.floor(position / size);
        const inChunk = position - index * size;
        const length = Math.min(data.length - done, area.table.sizeOf(index) - inChunk);
        await this.#writePiece(index, inChunk, data.subarray(done, done + length));
        done += length;
      }
      area.stats.imageWrites += 1;
    } finally {
      area.endImageIo();
    }
  }

  async #writePiece(index: number, inChunk: number, piece: Uint8Array): Promise<void> {
    const area = this.#area;
    const chunk = await area.lockChunk(index);
    let needWork = false;
    try {
      if (area.isCorrupted) throw area.corruptedError("write");
      switch (area.table.states[index]) {
        case CHUNK_ST_NEW: {
          if (!(await area.loadChunk(chunk))) {
            area.failChunk(chunk, Errno.EIO);
            throw area.corruptedError("write");
          }
          chunk.buffer!.set(piece, inChunk);
          area.stats.cowCopies += 1;
          needWork = area.scheduleStoring(chunk);
          break;
        }
        case CHUNK_ST_IN_MEMORY:
          chunk.buffer!.set(piece, inChunk);
          break;
        case CHUNK_ST_STORED: {
          const at = area.table.diffOffsets[index] + inChunk;
          await this.#storeIo("write", area.storage.store, at, piece);
          break;
        }
        default:
          throw area.corruptedError("write");
      }
    } finally {
      area.unlockChunk(chunk);
    }
    if (needWork) area.startWorker();
  }

  /** Image data lives only as long as the snapshot: nothing to make durable. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** The chunk holding byte `offset` and whether it still reads the original (NEW). */
  chunkState(offset: number): ImageChunkInfo {
    this.#checkRange("inspect", offset, 1);
    const index = Math.floor(offset / this.chunkSizeBytes);
    const offsetBytes = index * this.chunkSizeBytes;
    return {
      state: this.#area.chunkState(offset),
      offsetBytes,
      lengthBytes: Math.min(this.chunkSizeBytes, this.sizeBytes - offsetBytes),
    };
  }
}
