/**
 * The snapshot image of one device: the device as it was at take, plus the
 * writes made to the image when the snapshot is writable.
 *
 * Design note (seed 003 diff_area_submit_chunk; the kernel's snapimage.c,
 * not among the seeds, marks both CBT tables for image writes before the
 * data goes to the difference area): reads and writes are range-checked here
 * and carried out chunk by chunk by the device's DiffArea. A write marks both
 * CBT tables (setBoth); when the map is corrupted that marking is skipped
 * rather than failing the write, since the next take resets the map anyway.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { ChunkStateName } from "./chunk.ts";
import type { DiffArea } from "./diff_area.ts";
import type { Tracker } from "./tracker.ts";

/** Block-level view of one chunk of an image. */
export interface ImageChunkInfo {
  /** Chunk state: NEW means the image still reads the original there. */
  state: ChunkStateName;
  /** First byte of the chunk. */
  offsetBytes: number;
  /** Bytes in the chunk (the last may be short). */
  lengthBytes: number;
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
  #tracker: Tracker;
  #area: DiffArea;

  /** The image of `tracker`'s device served by `area` (engine use). */
  constructor(tracker: Tracker, area: DiffArea, writable: boolean) {
    this.trackerName = tracker.name;
    this.sizeBytes = area.capacityBytes;
    this.chunkSizeBytes = area.chunkSizeBytes;
    this.writable = writable;
    this.#tracker = tracker;
    this.#area = area;
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

  /**
   * Reads `into.length` bytes from `offset`. OUT_OF_RANGE past the end;
   * SNAPSHOT_CORRUPTED (errno EIO) once the snapshot is corrupted; IO when a
   * store fails; UNAVAILABLE once the snapshot is destroyed.
   */
  async read(offset: number, into: Uint8Array): Promise<void> {
    this.#checkRange("read", offset, into.length);
    await this.#area.readImage(offset, into);
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
    try {
      this.#tracker.cbt.setBoth(offset, data.length);
    } catch {
      // A corrupted map is reset at the next take; the write itself proceeds.
    }
    await this.#tracker.marksDurable();
    await this.#area.writeImage(offset, data);
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
