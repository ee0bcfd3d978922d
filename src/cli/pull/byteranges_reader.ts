/**
 * Reads a 206 response as positioned pieces: a single part (Content-Range
 * on the response) or `multipart/byteranges` (RFC 9110 section 14.6), whose
 * parts are split out of the stream as it arrives, each placed by its own
 * Content-Range. The server may coalesce and reorder the ranges it was
 * asked for, so the caller trusts the parts' ranges, not its request.
 *
 * @module
 */

import { ServiceError } from "../../errors.ts";

/** Bytes of the image at `offset`. */
export interface PositionedPiece {
  /** Where the bytes go. */
  offset: number;
  /** The bytes (a view valid until the next piece is asked for). */
  bytes: Uint8Array;
}

/** The longest part header block accepted. */
const MAX_PART_HEAD_BYTES = 16 * 1024;

function broken(detail: string): ServiceError {
  return new ServiceError(
    "IO",
    `the service sent a malformed multipart/byteranges body: ${detail}`,
  );
}

function parseContentRange(value: string | null): { offset: number; length: number } {
  const match = value ? /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value) : null;
  if (!match) throw broken(`bad Content-Range "${value}"`);
  const first = Number(match[1]);
  const last = Number(match[2]);
  if (last < first) throw broken(`bad Content-Range "${value}"`);
  return { offset: first, length: last - first + 1 };
}

/** A buffered reader over a byte stream with "read until" and "read n". */
class StreamBuffer {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer = new Uint8Array(0);

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async #more(): Promise<boolean> {
    const { value, done } = await this.#reader.read();
    if (done) return false;
    const joined = new Uint8Array(this.#buffer.length + value.length);
    joined.set(this.#buffer);
    joined.set(value, this.#buffer.length);
    this.#buffer = joined;
    return true;
  }

  /** The bytes up to (not including) `marker`, which is consumed; throws past `limit` bytes. */
  async until(marker: Uint8Array, limit: number): Promise<Uint8Array> {
    let from = 0;
    while (true) {
      for (let i = from; i + marker.length <= this.#buffer.length; i++) {
        if (marker.every((b, j) => this.#buffer[i + j] === b)) {
          const found = this.#buffer.slice(0, i);
          this.#buffer = this.#buffer.subarray(i + marker.length);
          return found;
        }
      }
      from = Math.max(0, this.#buffer.length - marker.length + 1);
      if (this.#buffer.length > limit) throw broken("a part header is too long");
      if (!(await this.#more())) throw broken("the body ended in a part header");
    }
  }

  /** Exactly `count` bytes, yielded in pieces as they arrive. */
  async *take(count: number): AsyncGenerator<Uint8Array> {
    let left = count;
    while (left > 0) {
      if (this.#buffer.length === 0 && !(await this.#more())) {
        throw broken(`the body ended ${left} bytes before the end of a part`);
      }
      const n = Math.min(left, this.#buffer.length);
      yield this.#buffer.subarray(0, n);
      this.#buffer = this.#buffer.subarray(n);
      left -= n;
    }
  }

  /** Exactly `count` bytes as one array. */
  async exactly(count: number): Promise<Uint8Array> {
    const out = new Uint8Array(count);
    let at = 0;
    for await (const piece of this.take(count)) {
      out.set(piece, at);
      at += piece.length;
    }
    return out;
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The pieces of a 206 `response` (single range or multipart/byteranges), in body order. */
export async function* byterangePieces(response: Response): AsyncGenerator<PositionedPiece> {
  const type = response.headers.get("content-type") ?? "";
  if (!response.body) return;
  const boundary = /^multipart\/byteranges\s*;.*boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (!boundary) {
    let at = parseContentRange(response.headers.get("content-range")).offset;
    for await (const bytes of response.body) {
      yield { offset: at, bytes };
      at += bytes.length;
    }
    return;
  }
  const body = new StreamBuffer(response.body);
  try {
    const delimiter = encoder.encode(`--${boundary}`);
    await body.until(delimiter, MAX_PART_HEAD_BYTES); // The preamble, empty from our server.
    while (true) {
      const after = decoder.decode(await body.exactly(2));
      if (after === "--") return; // The close delimiter.
      if (after !== "\r\n") throw broken("no line break after a delimiter");
      const head = decoder.decode(
        await body.until(encoder.encode("\r\n\r\n"), MAX_PART_HEAD_BYTES),
      );
      const headers = new Headers(
        head.split("\r\n").filter(Boolean).map((line): [string, string] => {
          const colon = line.indexOf(":");
          if (colon < 1) throw broken(`bad part header "${line}"`);
          return [line.slice(0, colon).trim(), line.slice(colon + 1).trim()];
        }),
      );
      const range = parseContentRange(headers.get("content-range"));
      let at = range.offset;
      for await (const bytes of body.take(range.length)) {
        yield { offset: at, bytes };
        at += bytes.length;
      }
      const next = decoder.decode(await body.exactly(2 + delimiter.length));
      if (next !== `\r\n--${boundary}`) throw broken("no delimiter after a part");
    }
  } finally {
    await body.cancel().catch(() => {});
  }
}
