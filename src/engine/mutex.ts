/**
 * A small asynchronous lock, the userspace stand-in for the kernel's binary
 * semaphores (the per-chunk `struct semaphore lock` of seed 003) and mutexes.
 *
 * Design note: FIFO with hand-off. `unlock()` passes ownership directly to
 * the oldest waiter, so a `tryLock()` (the store worker's `down_trylock`)
 * can never overtake a waiter, and a waiter registered in the same tick as a
 * lookup can rely on getting the lock next in line.
 *
 * @module
 */

/** An async mutual-exclusion lock with `tryLock` and FIFO hand-off. */
export class Mutex {
  #locked = false;
  #waiters: Array<() => void> = [];

  /** True while someone holds the lock. */
  get locked(): boolean {
    return this.#locked;
  }

  /** True when callers are queued for the lock. */
  get contended(): boolean {
    return this.#waiters.length > 0;
  }

  /** Takes the lock if it is free; returns whether it did. */
  tryLock(): boolean {
    if (this.#locked) return false;
    this.#locked = true;
    return true;
  }

  /** Resolves once the caller holds the lock. */
  lock(): Promise<void> {
    if (!this.#locked) {
      this.#locked = true;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** Releases the lock, handing it to the oldest waiter if there is one. */
  unlock(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#locked = false;
  }

  /** Runs `action` while holding the lock. */
  async run<T>(action: () => Promise<T>): Promise<T> {
    await this.lock();
    try {
      return await action();
    } finally {
      this.unlock();
    }
  }
}
