/**
 * The difference area of one device in a taken snapshot: its chunk table,
 * the chunks in transition, copy-on-write, the store queue and its worker,
 * and the corruption state. Image I/O on top of it is in image.ts.
 *
 * Design note (seed 003_3b7a49106c620ab4.txt, diff_area.c and chunk.c):
 * - State as data: states and storage offsets live in a {@link ChunkTable};
 *   a {@link Chunk} object (lock, buffer) exists only in the transit map,
 *   while a chunk is locked or IN_MEMORY, and is dropped once it is neither
 *   and nobody waits for its lock ({@link DiffArea.unlockChunk}). The lock
 *   stays FIFO with hand-off (mutex.ts), and a chunk has at most one transit
 *   object at a time, so the kernel's per-chunk semaphore semantics hold.
 * - Copy-on-write (diff_area_cow): for each chunk a write touches, lock it;
 *   if it is NEW, preserve its original data; when every chunk is
 *   preserved, unlock them (notify_load_and_postpone_io); only then does the
 *   caller write the original. Chunk locks are taken in ascending order, so
 *   concurrent writers cannot deadlock, and the lock plus the state check
 *   copies a chunk only once. A chunk never returns to NEW, so non-NEW
 *   chunks are skipped without locking them (the kernel locks them; skipping
 *   avoids waiting for a store in progress), and a write over no NEW chunk
 *   does not enter copy-on-write at all ({@link DiffArea.needsCopy}).
 * - Preserving a chunk, two ways. Where the original store can copy to the
 *   storage's store itself (BlockStore.copyTo: a FileStore copies what
 *   the page cache holds at once through one reused buffer, the rest in
 *   the kernel, off the event loop's thread; not in the seed), the chunk
 *   gets its storage space (waiting for pending growth,
 *   DiffStorage.allocateAfterGrowth, since concurrent copies allocate
 *   together), is copied there and goes NEW -> STORED directly, with no
 *   chunk buffer and no queue. Here the write waits for the store as
 *   well, a deliberate difference from the seed (whose write waits for the
 *   load only): it spares the event loop the read and the store's copy,
 *   which bound first writes on one thread. Failures: no space -> FAILED +
 *   corrupted ENOSPC; the copy failing -> FAILED + corrupted EIO (ENOSPC when
 *   the file system is full). When copyTo answers "refused" (two stores it
 *   cannot copy between), the area stops asking for the rest of its life and
 *   keeps the space it took for the next chunk stored. Otherwise (memory
 *   stores, a refusal) the original data is loaded into a pool buffer, the
 *   chunk becomes IN_MEMORY and goes on the store queue, and the write waits
 *   for the load, never for the store, as in the seed. A load failure marks
 *   the chunk FAILED and the area corrupted with EIO. In every case the
 *   original write still happens. Image reads stay exact either way: the
 *   chunk leaves NEW (IN_MEMORY or STORED) before the original is written.
 * - Store queue (store_queue.ts), for IN_MEMORY chunks: when it holds more
 *   than chunkMaximumInQueue chunks and no worker runs, the worker starts
 *   and drains it. Storing one chunk (diff_area_store_one): area corrupted
 *   -> FAILED; allocate a full chunk (failure: FAILED + corrupted ENOSPC);
 *   write the data (failure: FAILED + corrupted EIO, or ENOSPC when the file
 *   system is full); then STORED at that offset and the buffer goes back to
 *   the pool.
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
import type { BlockStore, StoreCopyResult } from "./block_store.ts";
import {
  Chunk,
  CHUNK_ST_FAILED,
  CHUNK_ST_IN_MEMORY,
  CHUNK_ST_NEW,
  CHUNK_ST_STORED,
  type ChunkStateName,
  chunkStateName,
} from "./chunk.ts";
import { ChunkTable } from "./chunk_table.ts";
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
  /** Chunk objects held (chunks in transition: locked or IN_MEMORY). */
  chunks: number;
}

/**
 * Int32 slots of {@link DiffArea.control}, shared with Workers that read the
 * image themselves (src/userspace/image_fast_path.ts): CORRUPTED (1 once the
 * area is corrupted), STOPPING (1 once destroy began) and IMAGE_IO (their
 * image reads in flight: a Worker adds one, then checks STOPPING; destroy sets
 * STOPPING, then waits for IMAGE_IO to reach 0, so no read outlives it).
 */
export const AreaControl = { CORRUPTED: 0, STOPPING: 1, IMAGE_IO: 2 } as const;

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
  /** States and storage offsets of every chunk (engine use; written only here and by images). */
  readonly table: ChunkTable;
  /** The original device's store (engine use). */
  readonly original: BlockStore;
  /** The snapshot's difference storage (engine use). */
  readonly storage: DiffStorage;
  /** Engine counters (engine use). */
  readonly stats: EngineStats;
  /** Shared flags and counter ({@link AreaControl}). */
  readonly control: Int32Array<SharedArrayBuffer> = new Int32Array(new SharedArrayBuffer(12));
  #emit: EmitEvent;
  #pool: DiffBufferPool;
  #transit = new Map<number, Chunk>();
  #queue: StoreQueue;
  #corrupted = false;
  #errorCode = 0;
  #stopping = false;
  #imageIo = 0;
  #idleWaiters: Array<() => void> = [];
  #kernelCopy: boolean;
  #spareOffsets: number[] = [];

  /** An empty difference area (all chunks NEW). */
  constructor(options: DiffAreaOptions) {
    this.name = options.name;
    this.capacityBytes = options.capacityBytes;
    this.table = new ChunkTable(options.capacityBytes, options.sizing);
    this.chunkShift = this.table.shift;
    this.chunkSizeBytes = this.table.chunkSizeBytes;
    this.chunkCount = this.table.count;
    this.original = options.original;
    this.#kernelCopy = options.original.copyTo !== undefined;
    this.storage = options.storage;
    this.#emit = options.emit;
    this.stats = options.stats;
    this.#pool = new DiffBufferPool(this.chunkSizeBytes, options.params.freeDiffBufferPoolSize);
    this.#queue = new StoreQueue(
      options.params.chunkMaximumInQueue,
      (chunk) => this.#storeChunk(chunk),
      { release: (chunk) => this.unlockChunk(chunk) },
    );
    const stored = options.storedChunks ?? [];
    for (let i = 0; i + 1 < stored.length; i += 2) {
      this.table.states[stored[i]] = CHUNK_ST_STORED;
      this.table.diffOffsets[stored[i]] = stored[i + 1];
    }
  }

  /** Flat pairs of chunk index and storage byte offset of every STORED chunk, by index. */
  storedChunks(): number[] {
    const pairs: number[] = [];
    const { states, diffOffsets, count } = this.table;
    for (let index = 0; index < count; index++) {
      if (states[index] === CHUNK_ST_STORED) pairs.push(index, diffOffsets[index]);
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
      chunks: this.#transit.size,
    };
  }

  /** State of the chunk holding byte `offsetBytes` of the image (NEW when never touched). */
  chunkState(offsetBytes: number): ChunkStateName {
    return chunkStateName(this.table.states[this.table.indexOf(offsetBytes)]);
  }

  /**
   * Marks the area corrupted with `errno` and raises a `corrupted` event,
   * once (diff_area_set_corrupted); later calls are ignored.
   */
  setCorrupted(errno: number): void {
    if (this.#corrupted) return;
    this.#corrupted = true;
    Atomics.store(this.control, AreaControl.CORRUPTED, 1);
    this.#errorCode = errno;
    this.#emit({
      code: "corrupted",
      deviceId: this.name,
      errorCode: errno,
      errorName: errnoName(errno),
    });
  }

  /** The transit object of chunk `index`, made when there is none. */
  #transitChunk(index: number): Chunk {
    let chunk = this.#transit.get(index);
    if (chunk === undefined) {
      const offset = index * this.chunkSizeBytes;
      chunk = new Chunk(index, offset, Math.min(this.chunkSizeBytes, this.capacityBytes - offset));
      this.#transit.set(index, chunk);
    }
    return chunk;
  }

  /** Resolves with chunk `index` locked, in FIFO order (engine use; release with unlockChunk). */
  async lockChunk(index: number): Promise<Chunk> {
    const chunk = this.#transitChunk(index);
    if (!chunk.lock.tryLock()) await chunk.lock.lock();
    return chunk;
  }

  /** The buffer of chunk `index` while it is IN_MEMORY (engine use). */
  bufferOf(index: number): Uint8Array | undefined {
    return this.#transit.get(index)?.buffer;
  }

  /**
   * Unlocks `chunk` (handing it to the next waiter) and forgets its transit
   * object once it is unlocked, holds no buffer and nobody waits (engine use).
   */
  unlockChunk(chunk: Chunk): void {
    chunk.lock.unlock();
    if (!chunk.lock.locked && chunk.buffer === undefined) {
      if (this.#transit.get(chunk.index) === chunk) this.#transit.delete(chunk.index);
    }
  }

  /** True when a write of the byte range must wait for copy-on-write (a NEW chunk, no corruption). */
  needsCopy(offsetBytes: number, lengthBytes: number): boolean {
    const end = Math.min(offsetBytes + lengthBytes, this.capacityBytes);
    if (offsetBytes >= end || this.#corrupted) return false;
    return this.table.anyNew(this.table.indexOf(offsetBytes), this.table.indexOf(end - 1));
  }

  /**
   * Copies the original data of every NEW chunk in the byte range before a
   * write to the original lands there. Resolves once the data is loaded;
   * never rejects (failures corrupt the area).
   */
  async copyOnWrite(offsetBytes: number, lengthBytes: number): Promise<void> {
    const end = Math.min(offsetBytes + lengthBytes, this.capacityBytes);
    if (offsetBytes >= end || this.#corrupted) return;
    const states = this.table.states;
    const last = this.table.indexOf(end - 1);
    const locked: Chunk[] = [];
    for (let index = this.table.indexOf(offsetBytes); index <= last; index++) {
      if (states[index] !== CHUNK_ST_NEW) continue;
      const chunk = await this.lockChunk(index);
      if (states[index] !== CHUNK_ST_NEW) {
        this.unlockChunk(chunk);
        continue;
      }
      locked.push(chunk);
    }
    if (locked.length === 0) return;
    const needWork = locked.length === 1
      ? await this.#preserve(locked[0])
      : (await Promise.all(locked.map((chunk) => this.#preserve(chunk)))).includes(true);
    for (const chunk of locked) this.unlockChunk(chunk);
    if (needWork) this.startWorker();
  }

  /**
   * Preserves the original data of a locked NEW `chunk`: copied in the
   * kernel straight to the difference storage (STORED) where the stores
   * allow it, else loaded into a buffer and queued (IN_MEMORY); a failure
   * marks it FAILED. Returns true when the worker must start. Never rejects.
   */
  async #preserve(chunk: Chunk): Promise<boolean> {
    if (this.#kernelCopy && (await this.#copyToStorage(chunk)) !== "refused") return false;
    if (!(await this.loadChunk(chunk))) {
      this.failChunk(chunk, Errno.EIO);
      return false;
    }
    this.stats.cowCopies += 1;
    return this.scheduleStoring(chunk);
  }

  /**
   * Copies a locked NEW `chunk` from the original to newly allocated
   * difference storage with BlockStore.copyTo and makes it STORED; FAILED
   * (and the area corrupted) when the space or the copy fails. "refused"
   * when the stores cannot copy this way: kernel copies stop for the area
   * and the space allocated goes to the next chunk stored.
   */
  async #copyToStorage(chunk: Chunk): Promise<"stored" | "failed" | "refused"> {
    if (this.#corrupted) {
      this.failChunk(chunk, 0);
      return "failed";
    }
    const offset = await this.#allocateChunk();
    if (offset === undefined || !(await this.#writable(offset))) {
      this.failChunk(chunk, Errno.ENOSPC);
      return "failed";
    }
    let result: StoreCopyResult;
    try {
      result = await this.original.copyTo!(chunk.offsetBytes, chunk.sizeBytes, {
        target: this.storage.store,
        targetOffset: offset,
      });
    } catch (error) {
      const full = (error as { code?: unknown } | null)?.code === "ENOSPC";
      this.failChunk(chunk, full ? Errno.ENOSPC : Errno.EIO);
      return "failed";
    }
    if (result === "refused") {
      this.#kernelCopy = false;
      this.#spareOffsets.push(offset);
      return "refused";
    }
    this.table.diffOffsets[chunk.index] = offset;
    // Atomics: a Worker that sees STORED must see the offset written before it.
    Atomics.store(this.table.states, chunk.index, CHUNK_ST_STORED);
    this.stats.cowCopies += 1;
    this.stats.chunksStored += 1;
    return "stored";
  }

  /**
   * Byte offset of a full chunk of difference storage (a spare one first,
   * else after pending growth, see DiffStorage.allocateAfterGrowth);
   * undefined when none is left.
   */
  async #allocateChunk(): Promise<number | undefined> {
    const spare = this.#spareOffsets.pop();
    if (spare !== undefined) return spare;
    try {
      return await this.storage.allocateAfterGrowth(this.chunkSizeBytes / SECTOR_BYTES);
    } catch {
      return undefined;
    }
  }

  /** True once the storage can hold a chunk at `offset` (after a pending grow); false when it cannot. */
  async #writable(offset: number): Promise<boolean> {
    try {
      await this.storage.ensureWritable(offset + this.chunkSizeBytes);
      return true;
    } catch {
      return false;
    }
  }

  /** Loads the original data of a locked NEW `chunk` into a pool buffer; false when the read failed (engine use). */
  async loadChunk(chunk: Chunk): Promise<boolean> {
    const buffer = this.#pool.take();
    try {
      await this.original.read(chunk.offsetBytes, buffer.subarray(0, chunk.sizeBytes));
    } catch {
      this.#pool.release(buffer);
      return false;
    }
    chunk.buffer = buffer;
    return true;
  }

  /**
   * Makes a locked, loaded `chunk` IN_MEMORY and queues it; returns true when
   * the caller must call {@link DiffArea.startWorker} after unlocking (engine use).
   */
  scheduleStoring(chunk: Chunk): boolean {
    Atomics.store(this.table.states, chunk.index, CHUNK_ST_IN_MEMORY);
    return this.#queue.push(chunk);
  }

  /** Marks a locked `chunk` FAILED, drops its buffer and corrupts the area with `errno` unless 0 (engine use). */
  failChunk(chunk: Chunk, errno: number): void {
    Atomics.store(this.table.states, chunk.index, CHUNK_ST_FAILED);
    if (chunk.buffer) {
      this.#pool.release(chunk.buffer);
      chunk.buffer = undefined;
    }
    this.stats.storeFailures += 1;
    if (errno) this.setCorrupted(errno);
  }

  /** Starts the store worker after a scheduleStoring that asked for it (engine use). */
  startWorker(): void {
    this.#queue.start(() => this.setCorrupted(Errno.EIO));
  }

  /** Stores one chunk taken from the queue, locked (diff_area_store_one after the lock). */
  async #storeChunk(chunk: Chunk): Promise<void> {
    const buffer = chunk.buffer;
    if (this.table.states[chunk.index] !== CHUNK_ST_IN_MEMORY || !buffer) return;
    if (this.#corrupted) {
      this.failChunk(chunk, 0);
      return;
    }
    const offset = await this.#allocateChunk();
    if (offset === undefined || !(await this.#writable(offset))) {
      this.failChunk(chunk, Errno.ENOSPC);
      return;
    }
    try {
      await this.storage.store.write(offset, buffer.subarray(0, chunk.sizeBytes));
    } catch (error) {
      const full = (error as { code?: unknown } | null)?.code === "ENOSPC";
      this.failChunk(chunk, full ? Errno.ENOSPC : Errno.EIO);
      return;
    }
    this.table.diffOffsets[chunk.index] = offset;
    Atomics.store(this.table.states, chunk.index, CHUNK_ST_STORED);
    chunk.buffer = undefined;
    this.#pool.release(buffer);
    this.stats.chunksStored += 1;
  }

  /** The SNAPSHOT_CORRUPTED error of an image `action` (engine use). */
  corruptedError(action: string): ServiceError {
    const name = errnoName(this.#errorCode) ?? `errno ${this.#errorCode}`;
    return new ServiceError(
      "SNAPSHOT_CORRUPTED",
      `Cannot ${action} the snapshot image of ${this.name}: the snapshot is corrupted (${name})`,
      { errno: "EIO" },
    );
  }

  /** Counts an image I/O in; UNAVAILABLE once destroy began (engine use; pair with endImageIo). */
  beginImageIo(action: string): void {
    if (this.#stopping) {
      throw new ServiceError(
        "UNAVAILABLE",
        `Cannot ${action} the snapshot image of ${this.name}: the snapshot is being destroyed`,
      );
    }
    this.#imageIo += 1;
  }

  /** Counts an image I/O out (engine use). */
  endImageIo(): void {
    this.#imageIo -= 1;
    if (this.#imageIo === 0 && this.#idleWaiters.length > 0) {
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
  }

  /**
   * First step of destroy, while copy-on-write still runs: image I/O started
   * later fails with UNAVAILABLE, and this resolves once image I/O in flight
   * has finished (so none of it can see a write that skipped copy-on-write).
   */
  async stopImageIo(): Promise<void> {
    this.#stopping = true;
    Atomics.store(this.control, AreaControl.STOPPING, 1);
    if (this.#imageIo > 0) {
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
    // Workers' reads are a pread or two each: poll for them (a timer keeps the event loop alive).
    while (Atomics.load(this.control, AreaControl.IMAGE_IO) > 0) {
      await new Promise((resolve) => setTimeout(resolve, 1));
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
    for (const chunk of this.#transit.values()) chunk.buffer = undefined;
    this.#transit.clear();
    this.#pool.clear();
  }
}
