/**
 * Recycling of payload buffers within one connection. A connection keeps
 * using the same few sizes (4 KiB random I/O, 256 KiB copies); allocating a
 * fresh zero-filled buffer per request costs a calloc (an mmap and page
 * faults above 128 KiB) and GC pressure. Buffers are kept per exact size,
 * at most 64 of a size and 32 MiB in all; a recycled buffer still holds old
 * data, so it is only handed out to be filled completely (a READ the export
 * fills, a WRITE payload read from the socket).
 *
 * @module
 */

const MAX_PER_SIZE = 64;
const MAX_POOLED_BYTES = 32 * 1024 * 1024;

/** A pool of exact-size byte buffers. */
export class BufferPool {
  #free = new Map<number, Uint8Array[]>();
  #pooledBytes = 0;

  /** Bytes held for reuse. */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  /** A buffer of exactly `length` bytes, recycled (stale contents) or new (zeroes). */
  take(length: number): Uint8Array {
    const recycled = this.#free.get(length)?.pop();
    if (recycled === undefined) return new Uint8Array(length);
    this.#pooledBytes -= length;
    return recycled;
  }

  /** Returns a buffer obtained from {@link BufferPool.take}; the caller no longer uses it. */
  give(buffer: Uint8Array): void {
    const length = buffer.length;
    if (this.#pooledBytes + length > MAX_POOLED_BYTES) return;
    let free = this.#free.get(length);
    if (free === undefined) {
      free = [];
      this.#free.set(length, free);
    }
    if (free.length >= MAX_PER_SIZE) return;
    free.push(buffer);
    this.#pooledBytes += length;
  }
}
