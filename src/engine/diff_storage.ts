/**
 * The difference storage of a snapshot: one store (a regular file, a block
 * device or memory) shared by all devices of the snapshot, handed out in
 * chunk-sized pieces.
 *
 * Design note (seed 003_3b7a49106c620ab4.txt, diff_storage.c). Counters in
 * 512-byte sectors as in the kernel: capacity (what the store holds now),
 * limit, filled (handed out) and requested (what the storage will hold once
 * pending growth completes).
 * - Set-up (diff_storage_set_diff_storage): capacity = the store's size,
 *   but never more than the limit: unlike the seed, which accepts a larger
 *   store whatever the limit, the limit always holds, so a store larger than
 *   the limit (a partition, or a file the caller chose to reuse) is used up
 *   to the limit only (its size is left alone; the service refuses a
 *   non-empty file unless told to overwrite it, and then empties it);
 *   requested = capacity. When that is at most half the minimum step and
 *   below the limit, the store grows at once by min(minimum, limit - capacity).
 * - Allocation (diff_storage_alloc) is append-only. It fails with ENOSPC, and
 *   sets the overflow flag so that every later allocation fails too, when
 *   filled + count > requested.
 * - After each allocation, when requested - filled <= minimum / 2 and the
 *   low-space flag is not yet set (check_halffull): if capacity < limit,
 *   requested += min(minimum, limit - capacity) and a background grow runs
 *   (diff_storage_reallocate_work); capacity follows when it completes and the
 *   flag clears once capacity >= requested. Otherwise (at the limit, or a
 *   block device, which never grows) a `no_space` event reports the step that
 *   could not be had (the minimum); the seed only logs here, the issue asks
 *   for the event.
 * - A chunk may be allocated beyond the current capacity while a grow is
 *   pending: {@link DiffStorage.ensureWritable} waits for the grow before the
 *   chunk is written (a BlockStore refuses writes past its capacity).
 * - Decision for a failed grow (the seed logs and keeps the low-space flag
 *   set, so it never retries): requested falls back to the capacity, so
 *   allocations fail (overflow, ENOSPC) once what exists is used, and a
 *   `no_space` event reports the sectors that could not be added.
 * Growth uses BlockStore.grow (FileStore extends the file; see file_store.ts).
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { BlockStore } from "./block_store.ts";
import type { EmitEvent } from "../event_log.ts";
import { type EngineParams, SECTOR_BYTES } from "./params.ts";
import type { EngineStats } from "./stats.ts";

/** Options of {@link DiffStorage.open}. */
export interface DiffStorageOptions {
  /** The most the storage may grow to, in sectors. */
  limitSectors: number;
  /** The path the storage was opened from, for reports. */
  path?: string;
  /** Engine parameters (diffStorageMinimumSectors). */
  params: EngineParams;
  /** Raises `no_space` events on the snapshot's queue. */
  emit: EmitEvent;
  /** Engine counters (storageGrows). */
  stats: EngineStats;
  /** Sectors already handed out (a storage restored after a service restart; default 0). */
  filledSectors?: number;
}

/** Usage counters of a difference storage, in sectors. */
export interface DiffStorageCounters {
  /** What the store holds now. */
  capacitySectors: number;
  /** The most it may grow to. */
  limitSectors: number;
  /** Handed out to chunks. */
  filledSectors: number;
  /** What it will hold once pending growth completes. */
  requestedSectors: number;
  /** True once an allocation failed: every later one fails too. */
  overflowed: boolean;
}

/** Append-only chunk space on a store, grown in steps up to a limit. */
export class DiffStorage {
  /** The store holding the data. The storage owns it and closes it. */
  readonly store: BlockStore;
  /** The path given at create, if any. */
  readonly path?: string;
  #params: EngineParams;
  #emit: EmitEvent;
  #stats: EngineStats;
  #capacity: number;
  #limit: number;
  #filled = 0;
  #requested: number;
  #lowSpace = false;
  #overflow = false;
  #growing: Promise<void> | undefined = undefined;
  #closed = false;

  private constructor(store: BlockStore, options: DiffStorageOptions) {
    this.store = store;
    this.path = options.path;
    this.#params = options.params;
    this.#emit = options.emit;
    this.#stats = options.stats;
    this.#limit = options.limitSectors;
    this.#capacity = Math.min(Math.floor(store.capacityBytes / SECTOR_BYTES), options.limitSectors);
    this.#requested = this.#capacity;
    this.#filled = options.filledSectors ?? 0;
  }

  /**
   * Sets up `store` as a difference storage limited to `limitSectors` (a
   * larger store is used up to the limit) and grows it at once when it is
   * nearly empty. INVALID_ARGUMENT for a bad limit; STORAGE_EXHAUSTED when it
   * cannot grow (ENOSPC when the file system is full).
   */
  static async open(store: BlockStore, options: DiffStorageOptions): Promise<DiffStorage> {
    const limit = options.limitSectors;
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot use ${store.name} as difference storage: the limit must be a number of sectors, not ${limit}`,
        { field: "limitSectors" },
      );
    }
    const filled = options.filledSectors ?? 0;
    if (!Number.isSafeInteger(filled) || filled < 0 || filled > limit) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot use ${store.name} as difference storage: ${filled} sectors cannot be in use ` +
          `under a limit of ${limit}`,
        { field: "filledSectors" },
      );
    }
    const storage = new DiffStorage(store, options);
    if (storage.#capacity < filled) {
      throw new ServiceError(
        "STORAGE_EXHAUSTED",
        `Cannot use ${store.name} as difference storage: it holds ${storage.#capacity} sectors, ` +
          `fewer than the ${filled} in use`,
      );
    }
    await storage.#setup();
    return storage;
  }

  get #growable(): boolean {
    return this.store.identity.kind !== "block";
  }

  #isHalfFull(sectorsLeft: number): boolean {
    return sectorsLeft <= Math.floor(this.#params.diffStorageMinimumSectors / 2);
  }

  async #setup(): Promise<void> {
    if (!this.#isHalfFull(this.#requested - this.#filled)) return;
    if (this.#capacity >= this.#limit) return;
    if (!this.#growable) return;
    const target = this.#capacity +
      Math.min(this.#params.diffStorageMinimumSectors, this.#limit - this.#capacity);
    try {
      await this.store.grow(target * SECTOR_BYTES);
    } catch (error) {
      const full = (error as { code?: unknown } | null)?.code === "ENOSPC";
      throw new ServiceError(
        "STORAGE_EXHAUSTED",
        `Cannot use ${this.store.name} as difference storage: growing it to ${target} sectors ` +
          `failed (${full ? "the file system is full" : String(error)})`,
        { cause: error, errno: "ENOSPC" },
      );
    }
    this.#capacity = target;
    this.#requested = target;
    this.#stats.storageGrows += 1;
  }

  /**
   * Hands out `countSectors` sectors and returns their byte offset. Throws
   * STORAGE_EXHAUSTED (errno ENOSPC) when they do not fit in what is
   * requested, and from then on for every call (the overflow flag).
   */
  allocate(countSectors: number): number {
    if (this.#overflow || this.#filled + countSectors > this.#requested) {
      this.#overflow = true;
      throw new ServiceError(
        "STORAGE_EXHAUSTED",
        `Cannot store a chunk of ${countSectors} sectors in ${this.store.name}: ` +
          `${this.#filled} of ${this.#requested} sectors are used (limit ${this.#limit})`,
        { errno: "ENOSPC" },
      );
    }
    const offsetSectors = this.#filled;
    this.#filled += countSectors;
    this.#checkHalfFull(this.#requested - this.#filled);
    return offsetSectors * SECTOR_BYTES;
  }

  /**
   * As {@link DiffStorage.allocate}, but when the sectors do not fit only
   * because growth is pending (or can start), waits for it first. Chunks
   * copied concurrently allocate together: without the wait they could use
   * up the pending step before it completes, and nothing would start the
   * next one. STORAGE_EXHAUSTED (ENOSPC) as allocate() once no growth can help.
   */
  async allocateAfterGrowth(countSectors: number): Promise<number> {
    while (!this.#overflow && this.#filled + countSectors > this.#requested) {
      if (this.#growing === undefined) this.#checkHalfFull(this.#requested - this.#filled);
      if (this.#growing === undefined) break;
      await this.#growing;
    }
    return this.allocate(countSectors);
  }

  #checkHalfFull(sectorsLeft: number): void {
    if (!this.#isHalfFull(sectorsLeft) || this.#lowSpace) return;
    this.#lowSpace = true;
    if (!this.#growable || this.#capacity >= this.#limit) {
      this.#emit({ code: "no_space", requestedSectors: this.#params.diffStorageMinimumSectors });
      return;
    }
    this.#requested += Math.min(
      this.#params.diffStorageMinimumSectors,
      this.#limit - this.#capacity,
    );
    // A grow that ended may still be settling when the next one starts: it
    // must not clear the new one.
    const growing: Promise<void> = this.#reallocate().finally(() => {
      if (this.#growing === growing) this.#growing = undefined;
    });
    this.#growing = growing;
  }

  async #reallocate(): Promise<void> {
    for (;;) {
      const target = this.#requested;
      try {
        await this.store.grow(target * SECTOR_BYTES);
      } catch {
        const missing = target - this.#capacity;
        this.#requested = this.#capacity;
        this.#emit({ code: "no_space", requestedSectors: missing });
        return;
      }
      this.#capacity = target;
      this.#stats.storageGrows += 1;
      if (this.#capacity >= this.#requested) {
        this.#lowSpace = false;
        return;
      }
    }
  }

  /**
   * Resolves once the store can hold `endBytes` (waiting for a pending grow).
   * STORAGE_EXHAUSTED (ENOSPC) when it cannot (the grow failed).
   */
  async ensureWritable(endBytes: number): Promise<void> {
    while (endBytes > this.#capacity * SECTOR_BYTES && this.#growing) await this.#growing;
    if (endBytes > this.#capacity * SECTOR_BYTES) {
      throw new ServiceError(
        "STORAGE_EXHAUSTED",
        `Cannot store a chunk in ${this.store.name} up to byte ${endBytes}: ` +
          `it holds ${this.#capacity} sectors`,
        { errno: "ENOSPC" },
      );
    }
  }

  /** The usage counters, in sectors. */
  counters(): DiffStorageCounters {
    return {
      capacitySectors: this.#capacity,
      limitSectors: this.#limit,
      filledSectors: this.#filled,
      requestedSectors: this.#requested,
      overflowed: this.#overflow,
    };
  }

  /** Waits for a pending grow, then closes the store. Later allocations fail. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    while (this.#growing) await this.#growing;
    await this.store.close();
  }
}
