/**
 * The pool of chunk-sized buffers of one difference area.
 *
 * Design note (seed 003_3b7a49106c620ab4.txt, diff_buffer.c): buffers taken
 * for copy-on-write are returned after the chunk is stored and kept for reuse
 * up to the pool size; beyond that they are dropped. The kernel compares the
 * free count before adding (so it may keep pool size + 1); here the pool
 * never holds more than `maxFree` buffers.
 *
 * @module
 */

/** Reusable chunk-sized buffers, at most `maxFree` of them kept free. */
export class DiffBufferPool {
  /** Size of every buffer in bytes (the full chunk size). */
  readonly bufferBytes: number;
  /** Most free buffers kept (freeDiffBufferPoolSize). */
  readonly maxFree: number;
  #free: Uint8Array[] = [];
  #allocated = 0;

  /** A pool of `bufferBytes`-sized buffers keeping at most `maxFree` free ones. */
  constructor(bufferBytes: number, maxFree: number) {
    this.bufferBytes = bufferBytes;
    this.maxFree = maxFree;
  }

  /** Free buffers held now. */
  get freeCount(): number {
    return this.#free.length;
  }

  /** Buffers allocated so far (not reused from the pool). */
  get allocatedCount(): number {
    return this.#allocated;
  }

  /** A buffer from the pool, or a new one when the pool is empty (diff_buffer_take). */
  take(): Uint8Array {
    const buffer = this.#free.pop();
    if (buffer) return buffer;
    this.#allocated += 1;
    return new Uint8Array(this.bufferBytes);
  }

  /** Returns a buffer: kept while fewer than `maxFree` are free, else dropped. */
  release(buffer: Uint8Array): void {
    if (this.#free.length < this.maxFree) this.#free.push(buffer);
  }

  /** Drops every free buffer (diff_buffer_cleanup). */
  clear(): void {
    this.#free = [];
  }
}
