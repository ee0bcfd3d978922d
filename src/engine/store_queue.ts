/**
 * The store queue of a difference area and its worker: chunks whose
 * original data is in memory wait here until the worker writes them to the
 * difference storage.
 *
 * Design note (seed 003_3b7a49106c620ab4.txt, chunk_schedule_storing and
 * diff_area_store_one / diff_area_store_queue_work): adding a chunk returns
 * whether the worker must start, which is when the queue holds more than
 * chunkMaximumInQueue chunks and no worker runs (the caller starts it after
 * unlocking the chunk, as queue_work runs after chunk_up). The worker takes
 * the first queued chunk it can lock without waiting (down_trylock), skipping
 * chunks in use, hands it to the store step and unlocks it; it stops when no
 * chunk can be taken, clearing the running flag in the same step so that a
 * later push starts a new worker. Stopping (destroy) ends the worker after
 * its current chunk.
 *
 * @module
 */

import type { Chunk } from "./chunk.ts";

/** The queue of chunks waiting to be stored, with its worker. */
export class StoreQueue {
  #maxInQueue: number;
  #store: (chunk: Chunk) => Promise<void>;
  #chunks: Chunk[] = [];
  #running = false;
  #stopped = false;
  #worker: Promise<void> | undefined = undefined;

  /**
   * A queue that lets the worker start beyond `maxInQueue` chunks and runs
   * `store` for each chunk it takes, with the chunk locked; `store` must not
   * reject (failures are the chunk's and the area's business).
   */
  constructor(maxInQueue: number, store: (chunk: Chunk) => Promise<void>) {
    this.#maxInQueue = maxInQueue;
    this.#store = store;
  }

  /** Chunks waiting. */
  get length(): number {
    return this.#chunks.length;
  }

  /** True while the worker runs (or is about to). */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Queues `chunk` (the caller holds its lock). Returns true when the caller
   * must call {@link StoreQueue.start} once it has unlocked the chunk.
   */
  push(chunk: Chunk): boolean {
    this.#chunks.push(chunk);
    if (this.#chunks.length > this.#maxInQueue && !this.#running && !this.#stopped) {
      this.#running = true;
      return true;
    }
    return false;
  }

  /** Starts the worker (after a push that asked for it). `onError` sees unexpected failures. */
  start(onError: (error: unknown) => void): void {
    this.#worker = this.#drain().catch(onError);
  }

  async #drain(): Promise<void> {
    while (!this.#stopped) {
      const at = this.#chunks.findIndex((queued) => queued.lock.tryLock());
      if (at < 0) {
        this.#running = false;
        return;
      }
      const [chunk] = this.#chunks.splice(at, 1);
      try {
        await this.#store(chunk);
      } finally {
        chunk.lock.unlock();
      }
    }
    this.#running = false;
  }

  /**
   * Runs the worker until the queue is empty (or stopped), whatever the
   * threshold: a clean stop stores everything. `onError` as in {@link StoreQueue.start}.
   */
  async storeAll(onError: (error: unknown) => void): Promise<void> {
    while (this.#chunks.length > 0 && !this.#stopped) {
      const before = this.#chunks.length;
      if (!this.#running) {
        this.#running = true;
        this.start(onError);
      }
      await this.#worker;
      // Every queued chunk is locked (image I/O in flight): let that I/O finish.
      if (this.#chunks.length === before) await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  /** Stops the worker after its current chunk and no longer starts one; resolves when it ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#worker;
  }

  /** Removes and returns every queued chunk. */
  drop(): Chunk[] {
    return this.#chunks.splice(0);
  }
}
