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
 * the first queued chunk it can lock without waiting (down_trylock): a chunk
 * in use goes to the back of the queue and stays queued, so each step costs
 * O(1) (a ring of chunks, no search or splice). It stops when a whole pass
 * found no chunk it could lock, clearing the running flag in the same step
 * so that a later push starts a new worker. Stopping (destroy) ends the
 * worker after its current chunk.
 *
 * @module
 */

import type { Chunk } from "./chunk.ts";

/** Options of a {@link StoreQueue}. */
export interface StoreQueueOptions {
  /** Called once a stored chunk is done, instead of unlocking it (default: unlock). */
  release?: (chunk: Chunk) => void;
}

/** The queue of chunks waiting to be stored, with its worker. */
export class StoreQueue {
  #maxInQueue: number;
  #store: (chunk: Chunk) => Promise<void>;
  #release: (chunk: Chunk) => void;
  #ring: (Chunk | undefined)[] = new Array(16);
  #head = 0;
  #length = 0;
  #running = false;
  #stopped = false;
  #worker: Promise<void> | undefined = undefined;

  /**
   * A queue that lets the worker start beyond `maxInQueue` chunks and runs
   * `store` for each chunk it takes, with the chunk locked; `store` must not
   * reject (failures are the chunk's and the area's business).
   */
  constructor(
    maxInQueue: number,
    store: (chunk: Chunk) => Promise<void>,
    options: StoreQueueOptions = {},
  ) {
    this.#maxInQueue = maxInQueue;
    this.#store = store;
    this.#release = options.release ?? ((chunk) => chunk.lock.unlock());
  }

  /** Chunks waiting. */
  get length(): number {
    return this.#length;
  }

  /** True while the worker runs (or is about to). */
  get running(): boolean {
    return this.#running;
  }

  #append(chunk: Chunk): void {
    if (this.#length === this.#ring.length) {
      const grown: (Chunk | undefined)[] = new Array(this.#ring.length * 2);
      for (let i = 0; i < this.#length; i++) {
        grown[i] = this.#ring[(this.#head + i) % this.#ring.length];
      }
      this.#ring = grown;
      this.#head = 0;
    }
    this.#ring[(this.#head + this.#length) % this.#ring.length] = chunk;
    this.#length += 1;
  }

  #shift(): Chunk {
    const chunk = this.#ring[this.#head]!;
    this.#ring[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.#ring.length;
    this.#length -= 1;
    return chunk;
  }

  /**
   * Queues `chunk` (the caller holds its lock). Returns true when the caller
   * must call {@link StoreQueue.start} once it has unlocked the chunk.
   */
  push(chunk: Chunk): boolean {
    this.#append(chunk);
    if (this.#length > this.#maxInQueue && !this.#running && !this.#stopped) {
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
    let busy = 0;
    while (!this.#stopped && busy < this.#length) {
      const chunk = this.#shift();
      if (!chunk.lock.tryLock()) {
        this.#append(chunk);
        busy += 1;
        continue;
      }
      busy = 0;
      try {
        await this.#store(chunk);
      } finally {
        this.#release(chunk);
      }
    }
    this.#running = false;
  }

  /**
   * Runs the worker until the queue is empty (or stopped), whatever the
   * threshold: a clean stop stores everything. `onError` as in {@link StoreQueue.start}.
   */
  async storeAll(onError: (error: unknown) => void): Promise<void> {
    while (this.#length > 0 && !this.#stopped) {
      const before = this.#length;
      if (!this.#running) {
        this.#running = true;
        this.start(onError);
      }
      await this.#worker;
      // Every queued chunk is locked (image I/O in flight): let that I/O finish.
      if (this.#length === before) await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  /** Stops the worker after its current chunk and no longer starts one; resolves when it ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#worker;
  }

  /** Removes and returns every queued chunk. */
  drop(): Chunk[] {
    const chunks: Chunk[] = [];
    while (this.#length > 0) chunks.push(this.#shift());
    return chunks;
  }
}
