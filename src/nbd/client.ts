/**
 * A small NBD client for pulling images: fixed newstyle handshake with
 * structured replies and metadata contexts, then pipelined READ and
 * BLOCK_STATUS requests matched to their replies by cookie. It speaks to any
 * NBD server (ours, nbdkit, qemu-nbd) and reuses the server's wire layouts
 * and constants, so the protocol's numbers are declared once.
 *
 * Structured READ replies may come as several OFFSET_DATA and OFFSET_HOLE
 * chunks in any order; each is placed at its offset in the caller's buffer
 * (holes zeroed), and the reply is complete at the chunk flagged DONE. An
 * error chunk or a simple error reply rejects that request only.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import {
  Command,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  Option,
  Reply,
  ReplyType,
  TransmissionFlag,
} from "./constants.ts";
import type { NbdExtent } from "./export.ts";
import { SocketReader } from "./socket_reader.ts";
import { CHUNK, getU64, Greeting, OptionReplyHeader, REQ, setU64, SIMPLE } from "./wire.ts";

/** Where an `nbd://host:port/name` or `nbd+unix:///name?socket=path` URI points. */
export interface NbdAddress {
  /** TCP host and port, or a Unix socket path. */
  target: { hostname: string; port: number } | { path: string };
  /** The export name. */
  name: string;
}

/** Parses an NBD URI; INVALID_ARGUMENT for anything else. */
export function parseNbdUri(uri: string): NbdAddress {
  let url: URL;
  try {
    url = new URL(uri);
  } catch (cause) {
    throw new ServiceError("INVALID_ARGUMENT", `${uri} is not an NBD URI`, { cause });
  }
  const name = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (url.protocol === "nbd:") {
    return { target: { hostname: url.hostname, port: Number(url.port || 10809) }, name };
  }
  const socket = url.searchParams.get("socket");
  if (url.protocol === "nbd+unix:" && socket) return { target: { path: socket }, name };
  throw new ServiceError("INVALID_ARGUMENT", `${uri} is not an nbd:// or nbd+unix:// URI`);
}

interface Pending {
  into?: Uint8Array;
  offset: number;
  extents?: NbdExtent[];
  contextId?: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

const MAX_OPTION_REPLY_BYTES = 64 * 1024;

function protocolError(detail: string): ServiceError {
  return new ServiceError("IO", `The NBD server broke the protocol: ${detail}`);
}

/** One connection to one export. */
export class NbdClient {
  /** Export size in bytes. */
  readonly sizeBytes: number;
  /** Transmission flags the server sent. */
  readonly transmissionFlags: number;
  /** Metadata contexts the server agreed to, by name, with their ids. */
  readonly contexts: ReadonlyMap<string, number>;
  readonly #conn: Deno.Conn;
  readonly #reader: SocketReader;
  readonly #pending = new Map<bigint, Pending>();
  #nextCookie = 1n;
  #failure: Error | undefined;
  readonly #receiving: Promise<void>;

  private constructor(
    conn: Deno.Conn,
    reader: SocketReader,
    negotiated: { sizeBytes: number; flags: number; contexts: Map<string, number> },
  ) {
    this.#conn = conn;
    this.#reader = reader;
    this.sizeBytes = negotiated.sizeBytes;
    this.transmissionFlags = negotiated.flags;
    this.contexts = negotiated.contexts;
    this.#receiving = this.#receive();
  }

  /**
   * Connects to `uri` and negotiates its export (structured replies, and the
   * `metaContexts` the server knows). UNAVAILABLE when the server cannot be
   * reached, NOT_FOUND when it has no such export.
   */
  static async connect(uri: string, options: { metaContexts?: string[] } = {}): Promise<NbdClient> {
    const address = parseNbdUri(uri);
    let conn: Deno.Conn;
    try {
      conn = "path" in address.target
        ? await Deno.connect({ transport: "unix", path: address.target.path })
        : await Deno.connect(address.target);
    } catch (cause) {
      throw new ServiceError(
        "UNAVAILABLE",
        `Cannot connect to ${uri}: ${(cause as Error).message}`,
        {
          cause,
        },
      );
    }
    try {
      const reader = new SocketReader(conn, 1 << 20);
      const negotiated = await handshake(conn, reader, {
        name: address.name,
        metaContexts: options.metaContexts ?? [],
        uri,
      });
      return new NbdClient(conn, reader, negotiated);
    } catch (error) {
      conn.close();
      throw error;
    }
  }

  /** True when the export refuses writes. */
  get readOnly(): boolean {
    return (this.transmissionFlags & TransmissionFlag.NBD_FLAG_READ_ONLY) !== 0;
  }

  /** Reads `into.length` bytes (at most 32 MiB) at `offset` into `into`. */
  pread(offset: number, into: Uint8Array): Promise<void> {
    return this.#request(Command.NBD_CMD_READ, { offset, length: into.length }, { into, offset });
  }

  /**
   * Extents of `context` from `offset` (the server covers up to `length`
   * bytes, at least one extent). NOT_SUPPORTED when the context was not agreed.
   */
  async blockStatus(context: string, offset: number, length: number): Promise<NbdExtent[]> {
    const contextId = this.contexts.get(context);
    if (contextId === undefined) {
      throw new ServiceError("NOT_SUPPORTED", `The NBD export does not offer ${context}`);
    }
    const pending: Omit<Pending, "resolve" | "reject"> = { offset, extents: [], contextId };
    await this.#request(Command.NBD_CMD_BLOCK_STATUS, { offset, length }, pending);
    return pending.extents!;
  }

  /** Sends NBD_CMD_DISC and closes the connection. */
  async close(): Promise<void> {
    if (!this.#failure) {
      const request = new Uint8Array(REQ.size);
      const view = new DataView(request.buffer);
      view.setUint32(REQ.magic, NBD_REQUEST_MAGIC);
      view.setUint16(REQ.type, Command.NBD_CMD_DISC);
      this.#failure = new ServiceError("UNAVAILABLE", "The NBD connection was closed");
      await writeAll(this.#conn, request).catch(() => {});
    }
    try {
      this.#conn.close();
    } catch {
      // Closed already by the receiver.
    }
    await this.#receiving;
  }

  #request(
    type: number,
    range: { offset: number; length: number },
    pending: Omit<Pending, "resolve" | "reject">,
  ): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    const cookie = this.#nextCookie++;
    const request = new Uint8Array(REQ.size);
    const view = new DataView(request.buffer);
    view.setUint32(REQ.magic, NBD_REQUEST_MAGIC);
    view.setUint16(REQ.type, type);
    view.setBigUint64(REQ.cookie, cookie);
    setU64(view, REQ.offset, range.offset);
    view.setUint32(REQ.length, range.length);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#pending.set(cookie, { ...pending, resolve, reject });
    writeAll(this.#conn, request).catch((error) => this.#fail(error));
    return promise;
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.values()) pending.reject(this.#failure);
    this.#pending.clear();
  }

  async #receive(): Promise<void> {
    const reader = this.#reader;
    try {
      while (await reader.fill(4)) {
        const magic = reader.view.getUint32(reader.take(0)); // A peek: fill(4) buffered it.
        if (magic === NBD_SIMPLE_REPLY_MAGIC) await this.#simpleReply();
        else if (magic === NBD_STRUCTURED_REPLY_MAGIC) await this.#chunk();
        else throw protocolError(`unknown reply magic 0x${magic.toString(16)}`);
      }
      this.#fail(
        this.#failure ?? new ServiceError("UNAVAILABLE", "The NBD server closed the connection"),
      );
    } catch (error) {
      this.#fail(
        this.#failure ??
          (error instanceof ServiceError ? error : new ServiceError(
            "UNAVAILABLE",
            `The NBD connection failed: ${(error as Error).message}`,
          )),
      );
    }
  }

  #take(cookie: bigint): Pending {
    const pending = this.#pending.get(cookie);
    if (!pending) throw protocolError(`a reply to unknown cookie ${cookie}`);
    return pending;
  }

  async #simpleReply(): Promise<void> {
    const reader = this.#reader;
    await reader.fill(SIMPLE.size);
    const at = reader.take(SIMPLE.size);
    const error = reader.view.getUint32(at + SIMPLE.error);
    const cookie = reader.view.getBigUint64(at + SIMPLE.cookie);
    const pending = this.#take(cookie);
    this.#pending.delete(cookie);
    if (error !== 0) return pending.reject(replyError(error, ""));
    if (pending.into) await reader.readInto(pending.into);
    pending.resolve();
  }

  async #chunk(): Promise<void> {
    const reader = this.#reader;
    await reader.fill(CHUNK.size);
    const at = reader.take(CHUNK.size);
    const view = reader.view;
    const flags = view.getUint16(at + CHUNK.flags);
    const type = view.getUint16(at + CHUNK.type);
    const cookie = view.getBigUint64(at + CHUNK.cookie);
    const length = view.getUint32(at + CHUNK.length);
    const pending = this.#take(cookie);
    let failed: Error | undefined;
    if (type === ReplyType.NBD_REPLY_TYPE_OFFSET_DATA && pending.into) {
      await reader.fill(8);
      const start = getU64(view, reader.take(8)) - pending.offset;
      if (start < 0 || start + length - 8 > pending.into.length) {
        throw protocolError("read data outside the requested range");
      }
      await reader.readInto(pending.into.subarray(start, start + length - 8));
    } else if (type === ReplyType.NBD_REPLY_TYPE_OFFSET_HOLE && pending.into) {
      await reader.fill(12);
      const hole = reader.take(12);
      const start = getU64(view, hole) - pending.offset;
      const size = view.getUint32(hole + 8);
      if (start < 0 || start + size > pending.into.length) {
        throw protocolError("a hole outside the requested range");
      }
      pending.into.fill(0, start, start + size);
    } else if (type === ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS && pending.extents) {
      await reader.fill(length);
      const body = reader.take(length);
      if (view.getUint32(body) === pending.contextId) {
        for (let p = body + 4; p + 8 <= body + length; p += 8) {
          pending.extents.push({ length: view.getUint32(p), flags: view.getUint32(p + 4) });
        }
      }
    } else if (type & 0x8000) {
      await reader.fill(length);
      const body = reader.take(length);
      const error = view.getUint32(body);
      const messageLength = view.getUint16(body + 4);
      const message = new TextDecoder().decode(
        reader.bytes.subarray(body + 6, body + 6 + Math.min(messageLength, length - 6)),
      );
      failed = replyError(error, message);
    } else {
      await reader.discard(length);
    }
    if (failed) {
      this.#pending.delete(cookie);
      pending.reject(failed);
    }
    if (flags & NBD_REPLY_FLAG_DONE && this.#pending.has(cookie)) {
      this.#pending.delete(cookie);
      pending.resolve();
    }
  }
}

function replyError(error: number, message: string): ServiceError {
  const code = error === 1 ? "READ_ONLY" : error === 22 ? "OUT_OF_RANGE" : "IO";
  return new ServiceError(
    code,
    `The NBD server answered error ${error}${message ? `: ${message}` : ""}`,
  );
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await conn.write(data.subarray(done));
}

function optionBytes(option: number, data: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(16 + data.length);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, NBD_OPTS_MAGIC);
  view.setUint32(8, option);
  view.setUint32(12, data.length);
  bytes.set(data, 16);
  return bytes;
}

/** Concatenates strings (u32 length-prefixed) and raw numbers into option data. */
function optionData(parts: Array<string | { u32: number } | { u16: number }>): Uint8Array {
  const encoder = new TextEncoder();
  const chunks: Uint8Array[] = [];
  for (const part of parts) {
    if (typeof part === "string") {
      const text = encoder.encode(part);
      const length = new Uint8Array(4);
      new DataView(length.buffer).setUint32(0, text.length);
      chunks.push(length, text);
    } else if ("u32" in part) {
      const value = new Uint8Array(4);
      new DataView(value.buffer).setUint32(0, part.u32);
      chunks.push(value);
    } else {
      const value = new Uint8Array(2);
      new DataView(value.buffer).setUint16(0, part.u16);
      chunks.push(value);
    }
  }
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

interface OptionReply {
  type: number;
  data: Uint8Array;
}

async function optionReply(reader: SocketReader, option: number): Promise<OptionReply> {
  if (!(await reader.fill(OptionReplyHeader.size))) throw protocolError("closed during handshake");
  const header = OptionReplyHeader.decode(
    reader.bytes.subarray(reader.take(OptionReplyHeader.size)),
  );
  if (header.magic !== NBD_REP_MAGIC || header.option !== option) {
    throw protocolError(`a bad reply to option ${option}`);
  }
  if (header.length > MAX_OPTION_REPLY_BYTES) throw protocolError("an oversized option reply");
  const data = new Uint8Array(header.length);
  await reader.readInto(data);
  return { type: header.type, data };
}

async function handshake(
  conn: Deno.Conn,
  reader: SocketReader,
  request: { name: string; metaContexts: string[]; uri: string },
): Promise<{ sizeBytes: number; flags: number; contexts: Map<string, number> }> {
  if (!(await reader.fill(Greeting.size))) throw protocolError("closed before the greeting");
  const greeting = Greeting.decode(reader.bytes.subarray(reader.take(Greeting.size)));
  if (greeting.magic !== NBD_MAGIC || greeting.optsMagic !== NBD_OPTS_MAGIC) {
    throw protocolError("not a newstyle NBD server");
  }
  if (!(greeting.flags & NBD_FLAG_FIXED_NEWSTYLE)) throw protocolError("not fixed newstyle");
  const clientFlags = new Uint8Array(4);
  new DataView(clientFlags.buffer).setUint32(
    0,
    NBD_FLAG_C_FIXED_NEWSTYLE | (greeting.flags & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0),
  );
  await writeAll(conn, clientFlags);

  await writeAll(conn, optionBytes(Option.NBD_OPT_STRUCTURED_REPLY, new Uint8Array()));
  const structured = await optionReply(reader, Option.NBD_OPT_STRUCTURED_REPLY);
  const contexts = new Map<string, number>();
  if (structured.type === Reply.NBD_REP_ACK && request.metaContexts.length > 0) {
    await writeAll(
      conn,
      optionBytes(
        Option.NBD_OPT_SET_META_CONTEXT,
        optionData([request.name, { u32: request.metaContexts.length }, ...request.metaContexts]),
      ),
    );
    while (true) {
      const reply = await optionReply(reader, Option.NBD_OPT_SET_META_CONTEXT);
      if (reply.type !== Reply.NBD_REP_META_CONTEXT) break;
      const view = new DataView(reply.data.buffer);
      contexts.set(new TextDecoder().decode(reply.data.subarray(4)), view.getUint32(0));
    }
  }
  await writeAll(conn, optionBytes(Option.NBD_OPT_GO, optionData([request.name, { u16: 0 }])));
  let sizeBytes = -1;
  let flags = 0;
  while (true) {
    const reply = await optionReply(reader, Option.NBD_OPT_GO);
    if (reply.type === Reply.NBD_REP_ACK) break;
    if (reply.type === Reply.NBD_REP_INFO) {
      const view = new DataView(reply.data.buffer);
      if (reply.data.length >= 12 && view.getUint16(0) === 0) {
        sizeBytes = getU64(view, 2);
        flags = view.getUint16(10);
      }
      continue;
    }
    const message = new TextDecoder().decode(reply.data);
    const code = reply.type === Reply.NBD_REP_ERR_UNKNOWN ? "NOT_FOUND" : "UNAVAILABLE";
    throw new ServiceError(
      code,
      `The NBD server refused export "${request.name}" of ${request.uri}${
        message ? `: ${message}` : ""
      }`,
    );
  }
  if (sizeBytes < 0) throw protocolError("no export size in the reply to NBD_OPT_GO");
  return { sizeBytes, flags, contexts };
}
