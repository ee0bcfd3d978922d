/**
 * Encoding of transmission replies (simple replies and structured reply
 * chunks) straight into the connection's {@link ReplyWriter}: small headers
 * are written in place in its staging buffer, READ data leaves in the same
 * socket write as its header (the header goes into room reserved in front of
 * the data, see READ_HEADROOM), and nothing is copied on the way.
 *
 * @module
 */

import {
  NBD_REPLY_FLAG_DONE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  ReplyType,
} from "./constants.ts";
import type { NbdExtent, PipedData } from "./export.ts";
import type { ReadRun } from "./read_plan.ts";
import type { ReplyWriter } from "./reply_writer.ts";
import {
  BlockDescriptor,
  BlockStatusPrefix,
  CHUNK,
  ErrorPrefix,
  OFFSET_DATA_OVERHEAD,
  OffsetHole,
  READ_HEADROOM,
  setU64,
  SIMPLE,
} from "./wire.ts";

/** The fields of a request header that replies and handlers need. */
export class RequestHeader {
  /** `type`: the NBD_CMD_* value. `flags`: NBD_CMD_FLAG_* bits. Cookie as two u32 halves. */
  constructor(
    readonly type: number,
    readonly flags: number,
    readonly cookieHi: number,
    readonly cookieLo: number,
    readonly offset: number,
    readonly length: number,
  ) {}
}

/** Block status descriptors of one selected context. */
export interface ContextStatus {
  /** The context id given at NBD_OPT_SET_META_CONTEXT. */
  id: number;
  /** Its descriptors, already merged and clamped. */
  descriptors: NbdExtent[];
}

const MAX_MESSAGE_BYTES = 4096;
const encoder = new TextEncoder();
const HOLE = ReplyType.NBD_REPLY_TYPE_OFFSET_HOLE;
const DATA = ReplyType.NBD_REPLY_TYPE_OFFSET_DATA;

/** Writes the replies of one connection. */
export class ReplySender {
  #writer: ReplyWriter;

  /** Replies go to `writer`. */
  constructor(writer: ReplyWriter) {
    this.#writer = writer;
  }

  /** A simple reply without payload: success (`error` 0) or an error. */
  simple(request: RequestHeader, error: number): void {
    const at = this.#writer.reserve(SIMPLE.size);
    const view = this.#writer.view;
    view.setUint32(at + SIMPLE.magic, NBD_SIMPLE_REPLY_MAGIC);
    view.setUint32(at + SIMPLE.error, error);
    view.setUint32(at + SIMPLE.cookie, request.cookieHi);
    view.setUint32(at + SIMPLE.cookie + 4, request.cookieLo);
  }

  /** A structured NBD_REPLY_TYPE_ERROR chunk (final) with a human message. */
  errorChunk(request: RequestHeader, error: number, message: string): void {
    const text = new Uint8Array(MAX_MESSAGE_BYTES);
    const { written } = encoder.encodeInto(message, text);
    const at = this.#header(
      request,
      ReplyType.NBD_REPLY_TYPE_ERROR,
      ErrorPrefix.size + written,
      ErrorPrefix.size,
      true,
    );
    const view = this.#writer.view;
    view.setUint32(at, error);
    view.setUint16(at + 4, written);
    this.#writer.send(text.subarray(0, written));
  }

  /** The final NBD_REPLY_TYPE_NONE chunk. */
  none(request: RequestHeader): void {
    this.#header(request, ReplyType.NBD_REPLY_TYPE_NONE, 0, 0, true);
  }

  /**
   * The successful reply to a READ whose data sits in `buffer` after
   * READ_HEADROOM bytes: one simple reply or one final OFFSET_DATA chunk.
   * `buffer` (from the connection's pool) is handed over to the writer,
   * which recycles it once sent.
   */
  readData(request: RequestHeader, buffer: Uint8Array, structured: boolean): void {
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    if (!structured) {
      const at = READ_HEADROOM - SIMPLE.size;
      view.setUint32(at + SIMPLE.magic, NBD_SIMPLE_REPLY_MAGIC);
      view.setUint32(at + SIMPLE.error, 0);
      view.setUint32(at + SIMPLE.cookie, request.cookieHi);
      view.setUint32(at + SIMPLE.cookie + 4, request.cookieLo);
      this.#writer.send(buffer.subarray(at), buffer);
      return;
    }
    const at = READ_HEADROOM - OFFSET_DATA_OVERHEAD;
    view.setUint32(at + CHUNK.magic, NBD_STRUCTURED_REPLY_MAGIC);
    view.setUint16(at + CHUNK.flags, NBD_REPLY_FLAG_DONE);
    view.setUint16(at + CHUNK.type, ReplyType.NBD_REPLY_TYPE_OFFSET_DATA);
    view.setUint32(at + CHUNK.cookie, request.cookieHi);
    view.setUint32(at + CHUNK.cookie + 4, request.cookieLo);
    view.setUint32(at + CHUNK.length, buffer.length - READ_HEADROOM + 8);
    setU64(view, at + CHUNK.size, request.offset);
    this.#writer.send(buffer.subarray(at), buffer);
  }

  /**
   * The successful reply to a READ whose data waits in a pipe: the header
   * (simple reply, or the final OFFSET_DATA chunk's) goes out first, then
   * the pipe is spliced after it.
   */
  readPiped(request: RequestHeader, data: PipedData, structured: boolean): void {
    if (structured) {
      const at = this.#header(request, DATA, 8 + data.length, 8, true);
      setU64(this.#writer.view, at, request.offset);
    } else {
      this.simple(request, 0);
    }
    this.#writer.sendPiped(data);
  }

  /**
   * A structured READ reply in several content chunks: OFFSET_DATA for data
   * runs (their bytes at the same position of `data`, which starts at the
   * request offset) and OFFSET_HOLE for holes; the last chunk is final.
   */
  readRuns(request: RequestHeader, runs: ReadRun[], data: Uint8Array): void {
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i];
      const done = i === runs.length - 1;
      if (run.hole) {
        const at = this.#header(request, HOLE, OffsetHole.size, OffsetHole.size, done);
        setU64(this.#writer.view, at, run.offset);
        this.#writer.view.setUint32(at + 8, run.length);
      } else {
        const at = this.#header(request, DATA, 8 + run.length, 8, done);
        setU64(this.#writer.view, at, run.offset);
        const start = run.offset - request.offset;
        this.#writer.send(data.subarray(start, start + run.length));
      }
    }
  }

  /** One NBD_REPLY_TYPE_BLOCK_STATUS chunk per context; the last is final. */
  blockStatus(request: RequestHeader, statuses: ContextStatus[]): void {
    statuses.forEach((status, index) => {
      const count = status.descriptors.length;
      const payload = new Uint8Array(BlockStatusPrefix.size + count * BlockDescriptor.size);
      const view = new DataView(payload.buffer);
      view.setUint32(0, status.id);
      for (let i = 0; i < count; i++) {
        const at = BlockStatusPrefix.size + i * BlockDescriptor.size;
        view.setUint32(at, status.descriptors[i].length);
        view.setUint32(at + 4, status.descriptors[i].flags);
      }
      const done = index === statuses.length - 1;
      this.#header(request, ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS, payload.length, 0, done);
      this.#writer.send(payload);
    });
  }

  /**
   * Reserves a chunk header plus the `fixed` first bytes of its payload
   * (written by the caller at the returned position).
   */
  #header(
    request: RequestHeader,
    type: number,
    length: number,
    fixed: number,
    done: boolean,
  ): number {
    const at = this.#writer.reserve(CHUNK.size + fixed);
    const view = this.#writer.view;
    view.setUint32(at + CHUNK.magic, NBD_STRUCTURED_REPLY_MAGIC);
    view.setUint16(at + CHUNK.flags, done ? NBD_REPLY_FLAG_DONE : 0);
    view.setUint16(at + CHUNK.type, type);
    view.setUint32(at + CHUNK.cookie, request.cookieHi);
    view.setUint32(at + CHUNK.cookie + 4, request.cookieLo);
    view.setUint32(at + CHUNK.length, length);
    return at + CHUNK.size;
  }
}
