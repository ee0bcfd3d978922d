/**
 * A scripted, byte-level NBD client for tests that real clients cannot
 * express: malformed handshakes and requests, pipelining with chosen
 * cookies, vanishing mid-message. It encodes with the server's own wire
 * layouts (the real-client tests check those against libnbd and QEMU).
 *
 * @module
 */

import {
  Command,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  Option,
  Reply,
} from "../../src/nbd/constants.ts";
import {
  ChunkHeader,
  Greeting,
  InfoExport,
  OptionHeader,
  OptionReplyHeader,
  Request,
  SimpleReply,
} from "../../src/nbd/wire.ts";

const encoder = new TextEncoder();

/** One option reply. */
export interface OptionReply {
  option: number;
  type: number;
  data: Uint8Array;
}

/** One transmission reply message: a simple reply or one structured chunk. */
export interface ReplyMessage {
  structured: boolean;
  /** Simple replies: the error. Structured: 0 unless an error chunk (then its error). */
  error: number;
  cookie: bigint;
  /** Structured: chunk flags and type. */
  flags: number;
  type: number;
  /** Structured: the payload. Simple: READ data when asked for. */
  payload: Uint8Array;
}

/** Where to connect. */
export type RawTarget = { port: number } | { path: string };

/** A raw NBD connection. */
export class RawNbdClient {
  #conn: Deno.Conn;
  #pending = new Uint8Array(0);
  #closed = false;
  /** Milliseconds a read waits before the connection is closed and the read fails. */
  timeoutMs = 5000;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Connects to a TCP port on 127.0.0.1 or a Unix socket. */
  static async connect(target: RawTarget): Promise<RawNbdClient> {
    const conn = "port" in target
      ? await Deno.connect({ hostname: "127.0.0.1", port: target.port })
      : await Deno.connect({ transport: "unix", path: target.path });
    return new RawNbdClient(conn);
  }

  /** Sends raw bytes; false when the server has closed the connection. */
  async send(bytes: Uint8Array): Promise<boolean> {
    try {
      let done = 0;
      while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
      return true;
    } catch {
      return false;
    }
  }

  /** Reads exactly `count` bytes; throws when the server closes first or the timeout passes. */
  async read(count: number): Promise<Uint8Array> {
    while (this.#pending.length < count) {
      const chunk = await this.#readSome();
      if (chunk === null) {
        throw new Error(`server closed the connection (${this.#pending.length}/${count} bytes)`);
      }
      const merged = new Uint8Array(this.#pending.length + chunk.length);
      merged.set(this.#pending);
      merged.set(chunk, this.#pending.length);
      this.#pending = merged;
    }
    const out = this.#pending.slice(0, count);
    this.#pending = this.#pending.slice(count);
    return out;
  }

  /** True when the server closes the connection (within the timeout), whatever it sends first. */
  async closedByServer(): Promise<boolean> {
    try {
      while ((await this.#readSome()) !== null) { /* drain */ }
      return true;
    } catch {
      return false;
    }
  }

  /** Closes the connection (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  async #readSome(): Promise<Uint8Array | null> {
    const buffer = new Uint8Array(64 * 1024);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.timeoutMs);
    });
    try {
      const n = await Promise.race([this.#conn.read(buffer), timeout]);
      if (n === "timeout") {
        this.close();
        throw new Error(`no data from the server within ${this.timeoutMs} ms`);
      }
      return n === null ? null : buffer.subarray(0, n);
    } catch (error) {
      if (this.#closed && !(error instanceof Error && error.message.startsWith("no data"))) {
        return null;
      }
      if (error instanceof Deno.errors.ConnectionReset) return null;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads the server greeting and returns its handshake flags; throws on bad magic. */
  async greeting(): Promise<number> {
    const greeting = Greeting.decode(await this.read(Greeting.size));
    if (greeting.magic !== NBD_MAGIC || greeting.optsMagic !== NBD_OPTS_MAGIC) {
      throw new Error("bad greeting magic");
    }
    return greeting.flags;
  }

  /** Sends the client flags (default: fixed newstyle and no zeroes). */
  async clientFlags(flags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<void> {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, flags);
    await this.send(bytes);
  }

  /** Sends option `option` with `data`. */
  async option(option: number, data: Uint8Array = new Uint8Array(0)): Promise<boolean> {
    const bytes = new Uint8Array(OptionHeader.size + data.length);
    OptionHeader.encode({ magic: NBD_OPTS_MAGIC, option, length: data.length }, bytes);
    bytes.set(data, OptionHeader.size);
    return await this.send(bytes);
  }

  /** Reads one option reply. */
  async optionReply(): Promise<OptionReply> {
    const header = OptionReplyHeader.decode(await this.read(OptionReplyHeader.size));
    if (header.magic !== 0x3e889045565a9n) throw new Error("bad option reply magic");
    return { option: header.option, type: header.type, data: await this.read(header.length) };
  }

  /** Reads option replies up to and including the final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    while (true) {
      const reply = await this.optionReply();
      replies.push(reply);
      if (reply.type === Reply.NBD_REP_ACK || reply.type >= 0x80000000) return replies;
    }
  }

  /**
   * Greeting, flags and options up to a successful NBD_OPT_GO on `name`:
   * optionally structured replies and meta contexts. Returns size and
   * transmission flags.
   */
  async handshake(
    name: string,
    options: { structured?: boolean; contexts?: string[] } = {},
  ): Promise<{ size: number; flags: number }> {
    await this.greeting();
    await this.clientFlags();
    if (options.structured || options.contexts) {
      await this.option(Option.NBD_OPT_STRUCTURED_REPLY);
      await this.optionReplies();
    }
    if (options.contexts) {
      await this.option(Option.NBD_OPT_SET_META_CONTEXT, metaContextData(name, options.contexts));
      await this.optionReplies();
    }
    await this.option(Option.NBD_OPT_GO, goData(name, []));
    const replies = await this.optionReplies();
    const last = replies[replies.length - 1];
    if (last.type !== Reply.NBD_REP_ACK) throw new Error(`NBD_OPT_GO failed: ${last.type}`);
    for (const reply of replies) {
      if (reply.type === Reply.NBD_REP_INFO && reply.data.length === InfoExport.size) {
        const info = InfoExport.decode(reply.data);
        if (info.type === 0) return { size: info.size, flags: info.flags };
      }
    }
    throw new Error("no NBD_INFO_EXPORT");
  }

  /** Sends one request (with its WRITE data, if any). */
  async request(request: {
    type: number;
    cookie: bigint;
    flags?: number;
    offset?: number | bigint;
    length?: number;
    data?: Uint8Array;
    magic?: number;
  }): Promise<boolean> {
    const data = request.data ?? new Uint8Array(0);
    const bytes = new Uint8Array(Request.size + data.length);
    const cookie = new Uint8Array(8);
    new DataView(cookie.buffer).setBigUint64(0, request.cookie);
    Request.encode({
      magic: request.magic ?? NBD_REQUEST_MAGIC,
      flags: request.flags ?? 0,
      type: request.type,
      cookie,
      offset: 0,
      length: request.length ?? data.length,
    }, bytes);
    new DataView(bytes.buffer).setBigUint64(
      Request.offsetOf("offset"),
      BigInt(request.offset ?? 0),
    );
    bytes.set(data, Request.size);
    return await this.send(bytes);
  }

  /**
   * Reads one reply message. For a simple reply to a READ, pass the READ
   * lengths by cookie so its data is read too.
   */
  async reply(readLengths: Map<bigint, number> = new Map()): Promise<ReplyMessage> {
    const head = await this.read(4);
    const magic = new DataView(head.buffer).getUint32(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(SimpleReply.size - 4);
      const whole = new Uint8Array(SimpleReply.size);
      whole.set(head);
      whole.set(rest, 4);
      const reply = SimpleReply.decode(whole);
      const cookie = new DataView(reply.cookie.buffer, reply.cookie.byteOffset).getBigUint64(0);
      const length = reply.error === 0 ? readLengths.get(cookie) ?? 0 : 0;
      return {
        structured: false,
        error: reply.error,
        cookie,
        flags: 0,
        type: 0,
        payload: await this.read(length),
      };
    }
    if (magic !== NBD_STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic ${magic}`);
    const rest = await this.read(ChunkHeader.size - 4);
    const whole = new Uint8Array(ChunkHeader.size);
    whole.set(head);
    whole.set(rest, 4);
    const chunk = ChunkHeader.decode(whole);
    const cookie = new DataView(chunk.cookie.buffer, chunk.cookie.byteOffset).getBigUint64(0);
    const payload = await this.read(chunk.length);
    const error = chunk.type & 0x8000 ? new DataView(payload.buffer).getUint32(0) : 0;
    return { structured: true, error, cookie, flags: chunk.flags, type: chunk.type, payload };
  }

  /** Sends NBD_CMD_DISC. */
  async disconnect(): Promise<void> {
    await this.request({ type: Command.NBD_CMD_DISC, cookie: 0n });
  }
}

/** Option data of NBD_OPT_INFO / NBD_OPT_GO: name and information requests. */
export function goData(name: string, infos: number[]): Uint8Array {
  const text = encoder.encode(name);
  const bytes = new Uint8Array(4 + text.length + 2 + 2 * infos.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, text.length);
  bytes.set(text, 4);
  view.setUint16(4 + text.length, infos.length);
  infos.forEach((info, i) => view.setUint16(6 + text.length + 2 * i, info));
  return bytes;
}

/** Option data of NBD_OPT_LIST/SET_META_CONTEXT: export name and queries. */
export function metaContextData(name: string, queries: string[]): Uint8Array {
  const parts = [name, ...queries].map((s) => encoder.encode(s));
  const bytes = new Uint8Array(8 + parts.reduce((sum, p) => sum + 4 + p.length, 0) - 4);
  const view = new DataView(bytes.buffer);
  let at = 0;
  view.setUint32(at, parts[0].length);
  bytes.set(parts[0], at + 4);
  at += 4 + parts[0].length;
  view.setUint32(at, queries.length);
  at += 4;
  for (const part of parts.slice(1)) {
    view.setUint32(at, part.length);
    bytes.set(part, at + 4);
    at += 4 + part.length;
  }
  return bytes;
}

/** Decodes the u32 + string payload of NBD_REP_SERVER / NBD_REP_META_CONTEXT. */
export function decodeNamed(data: Uint8Array): { value: number; text: string } {
  const value = new DataView(data.buffer, data.byteOffset).getUint32(0);
  return { value, text: new TextDecoder().decode(data.subarray(4)) };
}
