/**
 * Serialised, batched writing of replies to one socket. Replies are produced
 * concurrently by request handlers; they must reach the socket whole and one
 * after another. Small replies are written in place into a staging buffer
 * ({@link ReplyWriter.reserve}) or copied there, so that the replies produced
 * while one socket write is under way leave together in the next one; large
 * payloads are queued as they are (no copy) in their turn, and READ data held
 * in a pipe ({@link PipedData}) is spliced to the socket in its turn when the
 * stream can splice.
 *
 * @module
 */

import type { BufferPool } from "./buffer_pool.ts";
import type { PipedData } from "./export.ts";
import type { ByteStream } from "./socket_reader.ts";

/** Payloads up to this size are copied into the staging buffer rather than queued. */
const COPY_MAX_BYTES = 32 * 1024;
const STAGING_BYTES = 256 * 1024;

/** The serialising writer of one connection. */
export class ReplyWriter {
  #stream: ByteStream;
  #queue: (Uint8Array | PipedData)[] = [];
  #owners: (Uint8Array | undefined)[] = [];
  #queueHead = 0;
  #staging = new Uint8Array(STAGING_BYTES);
  #stagingView = new DataView(this.#staging.buffer);
  #sealed = 0;
  #end = 0;
  #queuedBytes = 0;
  #pumping = false;
  #failure: unknown = undefined;
  #drainWaiters: (() => void)[] = [];
  #onFailure: (error: unknown) => void;
  #pool: BufferPool | undefined;

  /**
   * Writes to `stream`. `onFailure` is called once when a socket write
   * fails (later replies are dropped); buffers sent with a `recycle` owner
   * go back to `pool` once written.
   */
  constructor(
    stream: ByteStream,
    options: { onFailure?: (error: unknown) => void; pool?: BufferPool } = {},
  ) {
    this.#stream = stream;
    this.#onFailure = options.onFailure ?? (() => {});
    this.#pool = options.pool;
  }

  /** The staging buffer that {@link ReplyWriter.reserve} positions point into. */
  get bytes(): Uint8Array {
    return this.#staging;
  }

  /** A DataView over {@link ReplyWriter.bytes}. */
  get view(): DataView {
    return this.#stagingView;
  }

  /** Bytes accepted and not yet written to the socket. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** True when the stream splices, so {@link ReplyWriter.sendPiped} may be used. */
  get splices(): boolean {
    return this.#stream.spliceFrom !== undefined;
  }

  /** The error that broke the socket, if any. */
  get failure(): unknown {
    return this.#failure;
  }

  /**
   * Reserves `count` bytes (at most 32 KiB) at the end of the output and
   * returns their position in {@link ReplyWriter.bytes} / {@link ReplyWriter.view}.
   * The caller fills them before its next `await`; they are sent in order
   * after everything reserved or sent before.
   */
  reserve(count: number): number {
    if (this.#end + count > this.#staging.length) this.#newStaging();
    const at = this.#end;
    this.#end += count;
    this.#queuedBytes += count;
    this.#schedule();
    return at;
  }

  /**
   * Sends `data` after everything reserved or sent before. Small payloads are
   * copied; larger ones are queued as they are, so the caller must not modify
   * `data` afterwards. `recycle` (the pooled buffer `data` is a view of) goes
   * back to the pool once `data` is copied or written.
   */
  send(data: Uint8Array, recycle?: Uint8Array): void {
    if (data.length <= COPY_MAX_BYTES) {
      const at = this.reserve(data.length);
      this.#staging.set(data, at);
      if (recycle !== undefined) this.#pool?.give(recycle);
      return;
    }
    this.#seal();
    this.#queue.push(data);
    this.#owners.push(recycle);
    this.#queuedBytes += data.length;
    this.#schedule();
  }

  /**
   * Splices the bytes waiting in `data`'s pipe to the socket after
   * everything reserved or sent before, then releases the pipe (also when
   * the socket fails first). Only when {@link ReplyWriter.splices}.
   */
  sendPiped(data: PipedData): void {
    if (this.#failure !== undefined) {
      data.release(false);
      return;
    }
    this.#seal();
    this.#queue.push(data);
    this.#owners.push(undefined);
    this.#queuedBytes += data.length;
    this.#schedule();
  }

  /** Resolves once everything accepted so far has been written (or the socket has failed). */
  drained(): Promise<void> {
    if (this.#queuedBytes === 0 || this.#failure !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  #seal(): void {
    if (this.#end > this.#sealed) {
      this.#queue.push(this.#staging.subarray(this.#sealed, this.#end));
      this.#owners.push(undefined);
      this.#sealed = this.#end;
    }
  }

  #newStaging(): void {
    this.#seal();
    this.#staging = new Uint8Array(STAGING_BYTES);
    this.#stagingView = new DataView(this.#staging.buffer);
    this.#sealed = this.#end = 0;
  }

  #schedule(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    queueMicrotask(() => this.#pump());
  }

  async #pump(): Promise<void> {
    try {
      while (this.#failure === undefined) {
        this.#seal();
        if (this.#queueHead === this.#queue.length) break;
        const chunk = this.#queue[this.#queueHead];
        const owner = this.#owners[this.#queueHead];
        this.#queue[this.#queueHead] = EMPTY;
        this.#owners[this.#queueHead++] = undefined;
        if (this.#queueHead >= 4096) {
          this.#queue.splice(0, this.#queueHead);
          this.#owners.splice(0, this.#queueHead);
          this.#queueHead = 0;
        }
        if (chunk instanceof Uint8Array) {
          let done = 0;
          const more = !(this.#queue[this.#queueHead] instanceof Uint8Array) &&
            this.#queueHead < this.#queue.length;
          while (done < chunk.length) done += await this.#stream.write(chunk.subarray(done), more);
          if (owner !== undefined) this.#pool?.give(owner);
        } else {
          await this.#splice(chunk);
        }
        this.#queuedBytes -= chunk.length;
      }
    } catch (error) {
      this.#failure = error;
      this.#onFailure(error);
      for (let i = this.#queueHead; i < this.#queue.length; i++) {
        const left = this.#queue[i];
        if (!(left instanceof Uint8Array)) left.release(false);
      }
    }
    this.#queue.length = this.#owners.length = this.#queueHead = 0;
    if (this.#failure !== undefined) this.#queuedBytes = 0;
    if (this.#failure !== undefined || this.#sealed === this.#end) this.#sealed = this.#end = 0;
    this.#pumping = false;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Splices all of `data`'s pipe to the socket, then releases it. */
  async #splice(data: PipedData): Promise<void> {
    let done = 0;
    try {
      while (done < data.length) {
        done += await this.#stream.spliceFrom!(data.fd, data.length - done);
      }
    } finally {
      data.release(done === data.length);
    }
  }
}

const EMPTY = new Uint8Array(0);
