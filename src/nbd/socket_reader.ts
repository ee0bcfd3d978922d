/**
 * Buffered reading from a stream socket with one reusable buffer: request
 * headers and option data are parsed in place (views into the buffer, valid
 * until the next read), large WRITE payloads go straight from the socket into
 * their own buffer, and unwanted payloads are skipped without allocating.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";

/** The byte stream the server speaks over: a Deno.Conn or anything shaped like it. */
export interface ByteStream {
  /**
   * Reads up to `into.length` bytes; null at end of stream. `midMessage`:
   * the bytes are the rest of a message already begun, which the peer is
   * still sending (a stream that would busy-poll for a new request should
   * sleep instead, leaving the CPU to the sender).
   */
  read(into: Uint8Array, midMessage?: boolean): Promise<number | null>;
  /**
   * Writes some of `data`; resolves to the number of bytes written. `more`:
   * a spliced payload follows at once (a socket may hold these bytes back
   * to send them with it, MSG_MORE).
   */
  write(data: Uint8Array, more?: boolean): Promise<number>;
  /**
   * Moves some of the `length` bytes waiting in the pipe `fd` to the stream
   * (splice); resolves to the number of bytes moved. Only streams over a
   * socket descriptor have it.
   */
  spliceFrom?(fd: number, length: number): Promise<number>;
  /** Closes the stream; pending reads and writes reject. */
  close(): void;
}

/** Reads this large or larger are done straight into the target, skipping the buffer. */
const DIRECT_READ_BYTES = 64 * 1024;

/**
 * A fill reads at most this much beyond what it needs: more read ahead is
 * what a large WRITE then copies out of the buffer into its own (its
 * payload past this goes straight from the socket), while 16 KiB still
 * holds hundreds of request headers.
 */
const READ_AHEAD_BYTES = 16 * 1024;

/** A buffered reader over a {@link ByteStream}. */
export class SocketReader {
  #stream: ByteStream;
  #buffer: Uint8Array;
  #view: DataView;
  #start = 0;
  #end = 0;

  /** `bufferBytes` bounds {@link SocketReader.fill}; it must exceed the largest message parsed in place. */
  constructor(stream: ByteStream, bufferBytes = 256 * 1024) {
    this.#stream = stream;
    this.#buffer = new Uint8Array(bufferBytes);
    this.#view = new DataView(this.#buffer.buffer);
  }

  /** The buffer that {@link SocketReader.take} offsets point into. */
  get bytes(): Uint8Array {
    return this.#buffer;
  }

  /** A DataView over {@link SocketReader.bytes}. */
  get view(): DataView {
    return this.#view;
  }

  /** Bytes received and not yet taken. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * Waits until `count` bytes are buffered. Resolves false when the stream
   * ends before the first of them (a clean end between messages); throws
   * ServiceError INVALID_ARGUMENT when it ends in the middle, and RangeError
   * when `count` exceeds the buffer.
   */
  fill(count: number): Promise<boolean> {
    return this.#fill(count, false);
  }

  async #fill(count: number, midMessage: boolean): Promise<boolean> {
    if (this.#end - this.#start >= count) return true;
    if (count > this.#buffer.length) {
      throw new RangeError(`${count} bytes do not fit a ${this.#buffer.length}-byte read buffer`);
    }
    if (this.#buffer.length - this.#start < count) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    while (this.#end - this.#start < count) {
      const wanted = Math.max(count - (this.#end - this.#start), READ_AHEAD_BYTES);
      const n = await this.#stream.read(
        this.#buffer.subarray(this.#end, Math.min(this.#buffer.length, this.#end + wanted)),
        midMessage || this.#end > this.#start,
      );
      if (n === null) {
        if (this.#end === this.#start) return false;
        throw truncated(this.#end - this.#start, count);
      }
      this.#end += n;
    }
    return true;
  }

  /** Consumes `count` buffered bytes and returns their offset in {@link SocketReader.bytes}. */
  take(count: number): number {
    const at = this.#start;
    this.#start += count;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return at;
  }

  /**
   * Fills `target` completely from the stream. Throws ServiceError
   * INVALID_ARGUMENT when the stream ends first.
   */
  async readInto(target: Uint8Array): Promise<void> {
    let done = Math.min(this.buffered, target.length);
    target.set(this.#buffer.subarray(this.#start, this.#start + done));
    this.take(done);
    while (done < target.length) {
      const missing = target.length - done;
      if (missing < Math.min(DIRECT_READ_BYTES, this.#buffer.length)) {
        if (!(await this.#fill(missing, true))) throw truncated(done, target.length);
        target.set(this.#buffer.subarray(this.#start, this.#start + missing), done);
        this.take(missing);
        return;
      }
      const n = await this.#stream.read(target.subarray(done), true);
      if (n === null) throw truncated(done, target.length);
      done += n;
    }
  }

  /** Reads and drops `count` bytes. Throws ServiceError INVALID_ARGUMENT when the stream ends first. */
  async discard(count: number): Promise<void> {
    let left = count;
    while (left > 0) {
      if (this.buffered === 0 && !(await this.fill(1))) throw truncated(count - left, count);
      const n = Math.min(left, this.buffered);
      this.take(n);
      left -= n;
    }
  }
}

function truncated(got: number, wanted: number): ServiceError {
  return new ServiceError(
    "INVALID_ARGUMENT",
    `Cannot read an NBD message: the peer closed the connection after ${got} of ${wanted} bytes`,
  );
}
