/**
 * The difference area of one device in a taken snapshot: its chunks,
 * copy-on-write, snapshot-image I/O, the store queue and its worker, and the
 * corruption state.
 *
 * Design note (seed 003_3b7a49106c620ab4.txt, diff_area.c and chunk.c):
 * - Copy-on-write (diff_area_cow): for each chunk a write touches, lock it;
 *   if it is NEW, load the original data into a pool buffer; when all loads
 *   are done each chunk becomes IN_MEMORY, goes on the store queue and is
 *   unlocked (notify_load_and_postpone_io); only then does the caller write
 *   the original. The write waits for loads, never for stores. Chunk locks
 *   are taken in ascending order, so concurrent writers cannot deadlock, and
 *   the lock plus the state check copies a chunk only once. A chunk never
 *   returns to NEW, so non-NEW chunks are skipped without locking them (the
 *   kernel locks them; skipping avoids waiting for a store in progress). A
 *   load failure marks the chunk FAILED and the area corrupted with EIO; the
 *   original write still happens.
 * - Store queue (store_queue.ts): when it holds more than chunkMaximumInQueue
 *   chunks and no worker runs, the worker starts and drains it. Storing one
 *   chunk (diff_area_store_one): area corrupted -> FAILED; no storage space
 *   yet -> allocate a full chunk (failure: FAILED + corrupted ENOSPC); write
 *   the data (failure: FAILED + corrupted EIO, or ENOSPC when the file system
 *   is full); then STORED and the buffer goes back to the pool.
 * - Image I/O (diff_area_submit_chunk), one chunk at a time under its lock:
 *   reads come from the original (NEW or no chunk: the lock keeps a
 *   copy-on-write from completing mid-read), the buffer (IN_MEMORY) or the
 *   storage (STORED); FAILED or a corrupted area gives SNAPSHOT_CORRUPTED.
 *   A stored chunk that cannot be read back (a short read: the storage was
 *   truncated) corrupts the area with EIO: its data is lost, never zeros.
 *   Unlike the kernel, a read also fails when the area became corrupted while
 *   it read: after corruption, writes to the original skip copy-on-write and
 *   could have changed what a NEW chunk read returned. Writes (writable
 *   snapshots): NEW -> load the original, apply, IN_MEMORY, queue; IN_MEMORY
 *   -> into the buffer; STORED -> into the storage. Chunk objects created
 *   only for a read are dropped again when they stay NEW and nobody waits.
 * - Destroy, in two steps: stopImageIo (new image I/O fails, image I/O in
 *   flight finishes while copy-on-write still protects it), then, once the
 *   tracker no longer copies, close: the worker stops after its current
 *   chunk, the queue and buffers are dropped (nothing more is stored).
 * - Across a service restart (not in the seed): {@link DiffArea.storeQueued}
 *   stores every queued chunk, {@link DiffArea.storedChunks} lists where
 *   the STORED chunks are, and the `storedChunks` option makes a new area
 *   with those chunks STORED again.
 *
 * @module
 */

import { Errno, errnoName, ServiceError } from "../errors.ts";
import type { BlockStore } from "./block_store.ts";
import { Chunk, ChunkState, type ChunkStateName } from "./chunk.ts";
import { DiffBufferPool } from "./diff_buffer_pool.ts";
import type { DiffStorage } from "./diff_storage.ts";
import type { EmitEvent } from "../event_log.ts";
import { type EngineParams, SECTOR_BYTES, type Sizing } from "./params.ts";
import type { EngineStats } from "./stats.ts";
import { StoreQueue } from "./store_queue.ts";

/** Options of a {@link DiffArea}. */
export interface DiffAreaOptions {
  /** The device's name (the tracker's), used as deviceId in events. */
  name: string;
  /** The original device's store. */
  original: BlockStore;
  /** The snapshot's difference storage. */
  storage: DiffStorage;
  /** The device's capacity at take; the image's size. */
  capacityBytes: number;
  /** Chunk sizing for that capacity (see chunkSizing). */
  sizing: Sizing;
  /** Engine parameters (queue and pool sizes). */
  params: EngineParams;
  /** Raises `corrupted` events on the snapshot's queue. */
  emit: EmitEvent;
  /** Engine counters. */
  stats: EngineStats;
  /**
   * Chunks already STORED (a restored area): flat pairs of chunk index and
   * byte offset in the difference storage, as {@link DiffArea.storedChunks} gives.
   */
  storedChunks?: ArrayLike<number>;
}

/** Internal counters of a difference area, for tests and diagnostics. */
export interface DiffAreaCounters {
  /** Chunks in the store queue. */
  queued: number;
  /** True while the store worker runs. */
  storing: boolean;
  /** Free buffers in the pool. */
  freeBuffers: number;
  /** Buffers allocated (not reused) so far. */
  allocatedBuffers: number;
  /** Chunk objects held (copied chunks, and chunks in use). */
  chunks: number;
}

/** Copy-on-write state of one device in a taken snapshot. */
export class DiffArea {
  /** The device's name. */
  readonly name: string;
  /** Image size in bytes (the device's capacity at take). */
  readonly capacityBytes: number;
  /** Power of 2 of the chunk size. */
  readonly chunkShift: number;
  /** Chunk size in bytes. */
  readonly chunkSizeBytes: number;
  /** Chunks covering the device (the last may be short). */
  readonly chunkCount: number;
  #original: BlockStore;
  #storage: DiffStorage;
  #emit: EmitEvent;
  #stats: EngineStats;
  #pool: DiffBufferPool;
  #chunks = new Map<number, Chunk>();
  #queue: StoreQueue;
  #corrupted = false;
  #errorCode = 0;
  #stopping = false;
  #imageIo = 0;
  #idleWaiters: Array<() => void> = [];

  /** An empty difference area (all chunks NEW). */
  constructor(options: DiffAreaOptions) {
    this.name = options.name;
    this.capacityBytes = options.capacityBytes;
    this.chunkShift = options.sizing.shift;
    this.chunkSizeBytes = 2 ** options.sizing.shift;
    this.chunkCount = options.sizing.count;
    this.#original = options.original;
    this.#storage = options.storage;
    this.#emit = options.emit;
    this.#stats = options.stats;
    this.#pool = new DiffBufferPool(this.chunkSizeBytes, options.params.freeDiffBufferPoolSize);
    this.#queue = new StoreQueue(
      options.params.chunkMaximumInQueue,
      (chunk) => this.#storeChunk(chunk),
    );
    const stored = options.storedChunks ?? [];
    for (let i = 0; i + 1 < stored.length; i += 2) {
      const chunk = this.#chunk(stored[i]);
      chunk.state = ChunkState.STORED;
      chunk.diffOffsetBytes = stored[i + 1];
    }
  }

  /** Flat pairs of chunk index and storage byte offset of every STORED chunk, by index. */
  storedChunks(): number[] {
    const pairs: number[] = [];
    const indexes = [...this.#chunks.keys()].sort((a, b) => a - b);
    for (const index of indexes) {
      const chunk = this.#chunks.get(index)!;
      if (chunk.state === ChunkState.STORED) pairs.push(index, chunk.diffOffsetBytes);
    }
    return pairs;
  }

  /**
   * Stores every queued chunk now (a clean stop), whatever the queue's
   * threshold; call with writes to the device stopped. Never rejects
   * (failures corrupt the area, as in the worker).
   */
  async storeQueued(): Promise<void> {
    await this.#queue.storeAll(() => this.setCorrupted(Errno.EIO));
  }

  /** True once loading or storing failed; image I/O then fails. */
  get isCorrupted(): boolean {
    return this.#corrupted;
  }

  /** 0, or the errno that corrupted the area (28 ENOSPC, 5 EIO). */
  get errorCode(): number {
    return this.#errorCode;
  }

  /** Queue, worker, pool and chunk counters. */
  counters(): DiffAreaCounters {
    return {
      queued: this.#queue.length,
      storing: this.#queue.running,
      freeBuffers: this.#pool.freeCount,
      allocatedBuffers: this.#pool.allocatedCount,
      chunks: this.#chunks.size,
    };
  }

  /** State of the chunk holding byte `offsetBytes` of the image (NEW when never touched). */
  chunkState(offsetBytes: number): ChunkStateName {
    const chunk = this.#chunks.get(Math.floor(offsetBytes / this.chunkSizeBytes));
    return chunk?.state ?? ChunkState.NEW;
  }

  /**
   * Marks the area corrupted with `errno` and raises a `corrupted` event,
   * once (diff_area_set_corrupted); later calls are ignored.
   */
  setCorrupted(errno: number): void {
    if (this.#corrupted) return;
    this.#corrupted = true;
    this.#errorCode = errno;
    this.#emit({
      code: "corrupted",
      deviceId: this.name,
      errorCode: errno,
      errorName: errnoName(errno),
    });
  }

  #chunk(index: number): Chunk {
    let chunk = this.#chunks.get(index);
    if (!chunk) {
      const offset = index * this.chunkSizeBytes;
      chunk = new Chunk(index, offset, Math.min(this.chunkSizeBytes, this.capacityBytes - offset));
      this.#chunks.set(index, chunk);
    }
    return chunk;
  }

  /**
   * Copies the original data of every NEW chunk in the byte range before a
   * write to the original lands there. Resolves once the data is loaded;
   * never rejects (failures corrupt the area).
   */
  async copyOnWrite(offsetBytes: number, lengthBytes: number): Promise<void> {
    const end = Math.min(offsetBytes + lengthBytes, this.capacityBytes);
    if (offsetBytes >= end || this.#corrupted) return;
    const first = Math.floor(offsetBytes / this.chunkSizeBytes);
    const last = Math.floor((end - 1) / this.chunkSizeBytes);
    const locked: Chunk[] = [];
    for (let index = first; index <= last; index++) {
      const known = this.#chunks.get(index);
      if (known && known.state !== ChunkState.NEW) continue;
      const chunk = known ?? this.#chunk(index);
      if (!chunk.lock.tryLock()) await chunk.lock.lock();
      if (chunk.state !== ChunkState.NEW) {
        chunk.lock.unlock();
        continue;
      }
      locked.push(chunk);
    }
    if (locked.length === 0) return;
    const loaded = await Promise.all(locked.map((chunk) => this.#load(chunk)));
    let needWork = false;
    locked.forEach((chunk, i) => {
      if (loaded[i]) {
        this.#stats.cowCopies += 1;
        needWork = this.#scheduleStoring(chunk) || needWork;
      } else {
        this.#storeFailed(chunk, Errno.EIO);
      }
      chunk.lock.unlock();
    });
    if (needWork) this.#startWorker();
  }

  async #load(chunk: Chunk): Promise<boolean> {
    const buffer = this.#pool.take();
    try {
      await this.#original.read(chunk.offsetBytes, buffer.subarray(0, chunk.sizeBytes));
    } catch {
      this.#pool.release(buffer);
      return false;
    }
    chunk.buffer = buffer;
    return true;
  }

  #scheduleStoring(chunk: Chunk): boolean {
    chunk.state = ChunkState.IN_MEMORY;
    return this.#queue.push(chunk);
  }

  #storeFailed(chunk: Chunk, errno: number): void {
    chunk.state = ChunkState.FAILED;
    if (chunk.buffer) {
      this.#pool.release(chunk.buffer);
      chunk.buffer = undefined;
    }
    this.#stats.storeFailures += 1;
    if (errno) this.setCorrupted(errno);
  }

  #startWorker(): void {
    this.#queue.start(() => this.setCorrupted(Errno.EIO));
  }

  /** Stores one chunk taken from the queue, locked (diff_area_store_one after the lock). */
  async #storeChunk(chunk: Chunk): Promise<void> {
    if (chunk.state !== ChunkState.IN_MEMORY || !chunk.buffer) return;
    if (this.#corrupted) {
      this.#storeFailed(chunk, 0);
      return;
    }
    try {
      if (chunk.diffOffsetBytes < 0) {
        chunk.diffOffsetBytes = this.#storage.allocate(this.chunkSizeBytes / SECTOR_BYTES);
      }
      await this.#storage.ensureWritable(chunk.diffOffsetBytes + this.chunkSizeBytes);
    } catch {
      this.#storeFailed(chunk, Errno.ENOSPC);
      return;
    }
    try {
      await this.#storage.store.write(
        chunk.diffOffsetBytes,
        chunk.buffer.subarray(0, chunk.sizeBytes),
      );
    } catch (error) {
      const full = (error as { code?: unknown } | null)?.code === "ENOSPC";
      this.#storeFailed(chunk, full ? Errno.ENOSPC : Errno.EIO);
      return;
    }
    chunk.state = ChunkState.STORED;
    this.#pool.release(chunk.buffer);
    chunk.buffer = undefined;
    this.#stats.chunksStored += 1;
  }

  #corruptedError(action: string): ServiceError {
    const name = errnoName(this.#errorCode) ?? `errno ${this.#errorCode}`;
    return new ServiceError(
      "SNAPSHOT_CORRUPTED",
      `Cannot ${action} the snapshot image of ${this.name}: the snapshot is corrupted (${name})`,
      { errno: "EIO" },
    );
  }

  #beginImageIo(action: string): void {
    if (this.#stopping) {
      throw new ServiceError(
        "UNAVAILABLE",
        `Cannot ${action} the snapshot image of ${this.name}: the snapshot is being destroyed`,
      );
    }
    this.#imageIo += 1;
  }

  #endImageIo(): void {
    this.#imageIo -= 1;
    if (this.#imageIo === 0) { for (const resolve of this.#idleWaiters.splice(0)) resolve(); }
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
      // A stored chunk that cannot be read back (or written) is lost: the snapshot is corrupted.
      if (store === this.#storage.store) this.setCorrupted(Errno.EIO);
      throw new ServiceError(
        "IO",
        `Cannot ${kind} the snapshot image of ${this.name}: ${kind} of ${piece.length} bytes ` +
          `at ${offset} on ${store.name} failed`,
        { cause: error },
      );
    }
  }

  /** Runs `step` for each chunk-bounded piece of a byte range of the image. */
  async #forEachPiece(
    offsetBytes: number,
    lengthBytes: number,
    step: (index: number, inChunk: number, from: number, to: number) => Promise<void>,
  ): Promise<void> {
    let done = 0;
    while (done < lengthBytes) {
      const position = offsetBytes + done;
      const index = Math.floor(position / this.chunkSizeBytes);
      const inChunk = position - index * this.chunkSizeBytes;
      const chunkEnd = Math.min((index + 1) * this.chunkSizeBytes, this.capacityBytes);
      const length = Math.min(lengthBytes - done, chunkEnd - position);
      await step(index, inChunk, done, done + length);
      done += length;
    }
  }

  /**
   * Reads the image from `offsetBytes` into `into` (the range is checked by
   * the caller). SNAPSHOT_CORRUPTED after corruption, IO when a store fails,
   * UNAVAILABLE once the snapshot is being destroyed.
   */
  async readImage(offsetBytes: number, into: Uint8Array): Promise<void> {
    this.#beginImageIo("read");
    try {
      await this.#forEachPiece(offsetBytes, into.length, (index, inChunk, from, to) => {
        return this.#readPiece(index, inChunk, into.subarray(from, to));
      });
      this.#stats.imageReads += 1;
    } finally {
      this.#endImageIo();
    }
  }

  async #readPiece(index: number, inChunk: number, piece: Uint8Array): Promise<void> {
    const chunk = this.#chunk(index);
    if (!chunk.lock.tryLock()) await chunk.lock.lock();
    try {
      if (this.#corrupted) throw this.#corruptedError("read");
      switch (chunk.state) {
        case ChunkState.NEW:
          await this.#storeIo("read", this.#original, chunk.offsetBytes + inChunk, piece);
          break;
        case ChunkState.IN_MEMORY:
          piece.set(chunk.buffer!.subarray(inChunk, inChunk + piece.length));
          break;
        case ChunkState.STORED:
          await this.#storeIo("read", this.#storage.store, chunk.diffOffsetBytes + inChunk, piece);
          break;
        default:
          throw this.#corruptedError("read");
      }
      if (this.#corrupted) throw this.#corruptedError("read");
    } finally {
      chunk.lock.unlock();
      if (
        chunk.state === ChunkState.NEW && !chunk.lock.locked && this.#chunks.get(index) === chunk
      ) {
        this.#chunks.delete(index);
      }
    }
  }

  /**
   * Writes `data` to the image at `offsetBytes` (the range and writability
   * are checked by the caller). Errors as {@link DiffArea.readImage}.
   */
  async writeImage(offsetBytes: number, data: Uint8Array): Promise<void> {
    this.#beginImageIo("write");
    try {
      await this.#forEachPiece(offsetBytes, data.length, (index, inChunk, from, to) => {
        return this.#writePiece(index, inChunk, data.subarray(from, to));
      });
      this.#stats.imageWrites += 1;
    } finally {
      this.#endImageIo();
    }
  }

  async #writePiece(index: number, inChunk: number, piece: Uint8Array): Promise<void> {
    const chunk = this.#chunk(index);
    if (!chunk.lock.tryLock()) await chunk.lock.lock();
    let needWork = false;
    try {
      if (this.#corrupted) throw this.#corruptedError("write");
      switch (chunk.state) {
        case ChunkState.NEW: {
          if (!(await this.#load(chunk))) {
            this.#storeFailed(chunk, Errno.EIO);
            throw this.#corruptedError("write");
          }
          chunk.buffer!.set(piece, inChunk);
          this.#stats.cowCopies += 1;
          needWork = this.#scheduleStoring(chunk);
          break;
        }
        case ChunkState.IN_MEMORY:
          chunk.buffer!.set(piece, inChunk);
          break;
        case ChunkState.STORED:
          await this.#storeIo("write", this.#storage.store, chunk.diffOffsetBytes + inChunk, piece);
          break;
        default:
          throw this.#corruptedError("write");
      }
    } finally {
      chunk.lock.unlock();
    }
    if (needWork) this.#startWorker();
  }

  /**
   * First step of destroy, while copy-on-write still runs: image I/O started
   * later fails with UNAVAILABLE, and this resolves once image I/O in flight
   * has finished (so none of it can see a write that skipped copy-on-write).
   */
  async stopImageIo(): Promise<void> {
    this.#stopping = true;
    if (this.#imageIo > 0) {
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
  }

  /**
   * Last step of destroy, once detached from the tracker: stops image I/O
   * (as {@link DiffArea.stopImageIo}), lets the worker finish its current
   * chunk, then drops the queue, chunks and buffers. Never rejects.
   */
  async close(): Promise<void> {
    await this.stopImageIo();
    await this.#queue.stop();
    this.#queue.drop();
    for (const chunk of this.#chunks.values()) chunk.buffer = undefined;
    this.#chunks.clear();
    this.#pool.clear();
  }
}
