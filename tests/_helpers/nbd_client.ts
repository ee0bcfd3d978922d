/**
 * A small NBD client for tests that need to write to (and read from) an
 * export from TypeScript, e.g. to keep writers busy on a tracked device
 * while a real client reads its snapshot image.
 *
 * It speaks the protocol as doc/proto.md of NetworkBlockDevice/nbd states it,
 * encoded here with DataView rather than with the server's own layouts, so
 * that it checks the server's wire format independently: fixed newstyle
 * handshake, NBD_OPT_GO (no structured replies, so every reply is simple),
 * then READ, WRITE (optionally FUA), FLUSH and DISC. Requests are pipelined:
 * any number may be in flight, replies are matched by cookie.
 *
 * @module
 */

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;
const CMD_FLAG_FUA = 1;
/** Transmission flag: the export refuses writes. */
export const NBD_FLAG_READ_ONLY = 1 << 1;

/** A request the server answered with an error; `errno` is the NBD error value (1 EPERM...). */
export class NbdRequestError extends Error {
  /** The error value of the simple reply. */
  readonly errno: number;

  /** An error reply `errno` to `what`. */
  constructor(what: string, errno: number) {
    super(`${what}: the server replied with error ${errno}`);
    this.name = "NbdRequestError";
    this.errno = errno;
  }
}

/** Where an `nbd://host:port/name` or `nbd+unix:///name?socket=path` URI points. */
export interface NbdAddress {
  /** TCP host and port, or a Unix socket path. */
  target: { hostname: string; port: number } | { path: string };
  /** The export name. */
  name: string;
}

/** Parses an NBD URI (the two forms the userspace backend hands out). */
export function parseNbdUri(uri: string): NbdAddress {
  const url = new URL(uri);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (url.protocol === "nbd:") {
    return { target: { hostname: url.hostname, port: Number(url.port || 10809) }, name };
  }
  const socket = url.searchParams.get("socket");
  if (url.protocol === "nbd+unix:" && socket) return { target: { path: socket }, name };
  throw new Error(`not an NBD URI this client understands: ${uri}`);
}

interface Pending {
  readLength: number;
  resolve: (data: Uint8Array) => void;
  reject: (error: Error) => void;
  what: string;
}

/** One connection to one export. */
export class NbdClient {
  /** Export size in bytes. */
  readonly sizeBytes: number;
  /** Transmission flags the server sent. */
  readonly transmissionFlags: number;
  #conn: Deno.Conn;
  #buffer: Uint8Array;
  #pending = new Map<bigint, Pending>();
  #nextCookie = 1n;
  #sending: Promise<unknown> = Promise.resolve();
  #readLoop: Promise<void> = Promise.resolve();
  #failure?: Error;
  #closed = false;

  private constructor(
    conn: Deno.Conn,
    sizeBytes: number,
    flags: number,
    buffer: Uint8Array,
  ) {
    this.#conn = conn;
    this.sizeBytes = sizeBytes;
    this.transmissionFlags = flags;
    this.#buffer = buffer;
  }

  /** Connects to `uri` and negotiates its export with NBD_OPT_GO. Throws when the server refuses. */
  static async connect(uri: string): Promise<NbdClient> {
    const { target, name } = parseNbdUri(uri);
    const conn = "path" in target
      ? await Deno.connect({ transport: "unix", path: target.path })
      : await Deno.connect({ hostname: target.hostname, port: target.port });
    const reader = new ExactReader(conn);
    try {
      const greeting = new DataView((await reader.read(18)).buffer);
      if (greeting.getBigUint64(0) !== NBDMAGIC || greeting.getBigUint64(8) !== IHAVEOPT) {
        throw new Error("the server did not send a fixed newstyle greeting");
      }
      await writeAll(conn, u32(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
      const nameBytes = new TextEncoder().encode(name);
      const option = new Uint8Array(16 + 4 + nameBytes.length + 2);
      const view = new DataView(option.buffer);
      view.setBigUint64(0, IHAVEOPT);
      view.setUint32(8, OPT_GO);
      view.setUint32(12, option.length - 16);
      view.setUint32(16, nameBytes.length);
      option.set(nameBytes, 20);
      await writeAll(conn, option);
      let size: number | undefined;
      let flags = 0;
      for (;;) {
        const header = new DataView((await reader.read(20)).buffer);
        if (header.getBigUint64(0) !== OPTION_REPLY_MAGIC) throw new Error("bad option reply");
        const type = header.getUint32(12);
        const data = await reader.read(header.getUint32(16));
        if (type === REP_ACK) break;
        if (type >= 0x80000000) {
          const message = new TextDecoder().decode(data);
          throw new Error(
            `NBD_OPT_GO "${name}" refused (reply type 0x${type.toString(16)}) ${message}`,
          );
        }
        const info = new DataView(data.buffer, data.byteOffset, data.length);
        if (type === REP_INFO && data.length === 12 && info.getUint16(0) === INFO_EXPORT) {
          size = Number(info.getBigUint64(2));
          flags = info.getUint16(10);
        }
      }
      if (size === undefined) throw new Error("the server sent no NBD_INFO_EXPORT");
      const client = new NbdClient(conn, size, flags, reader.rest());
      client.#readLoop = client.#readReplies();
      return client;
    } catch (error) {
      conn.close();
      throw error;
    }
  }

  /** True when the export is read-only. */
  get readOnly(): boolean {
    return (this.transmissionFlags & NBD_FLAG_READ_ONLY) !== 0;
  }

  /** Reads `length` bytes at `offset`. NbdRequestError when the server replies with an error. */
  async pread(offset: number, length: number): Promise<Uint8Array> {
    return await this.#request(CMD_READ, 0, offset, length, undefined, `READ ${length}@${offset}`);
  }

  /** Writes `data` at `offset` (with FUA when asked). NbdRequestError on an error reply. */
  async pwrite(offset: number, data: Uint8Array, options: { fua?: boolean } = {}): Promise<void> {
    const flags = options.fua ? CMD_FLAG_FUA : 0;
    await this.#request(
      CMD_WRITE,
      flags,
      offset,
      data.length,
      data,
      `WRITE ${data.length}@${offset}`,
    );
  }

  /** Makes completed writes durable. */
  async flush(): Promise<void> {
    await this.#request(CMD_FLUSH, 0, 0, 0, undefined, "FLUSH");
  }

  /** Sends NBD_CMD_DISC (when the connection still works) and closes. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#failure) {
      await this.#send(requestBytes(CMD_DISC, 0, 0n, 0, 0, undefined)).catch(() => {});
    }
    try {
      this.#conn.close();
    } catch {
      // Closed by the server already.
    }
    await this.#readLoop;
  }

  #request(
    type: number,
    flags: number,
    offset: number,
    length: number,
    data: Uint8Array | undefined,
    what: string,
  ): Promise<Uint8Array> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) return Promise.reject(new Error(`${what}: the client is closed`));
    const cookie = this.#nextCookie++;
    const reply = new Promise<Uint8Array>((resolve, reject) => {
      this.#pending.set(cookie, {
        readLength: type === CMD_READ ? length : 0,
        resolve,
        reject,
        what,
      });
    });
    this.#send(requestBytes(type, flags, cookie, offset, length, data)).catch((error) => {
      this.#fail(new Error(`${what}: cannot send: ${error}`));
    });
    return reply;
  }

  #send(bytes: Uint8Array): Promise<void> {
    const sent = this.#sending.then(() => writeAll(this.#conn, bytes));
    this.#sending = sent.catch(() => {});
    return sent;
  }

  async #readReplies(): Promise<void> {
    const reader = new ExactReader(this.#conn, this.#buffer);
    try {
      for (;;) {
        const header = await reader.readOrEnd(16);
        if (header === null) break;
        const view = new DataView(header.buffer);
        if (view.getUint32(0) !== SIMPLE_REPLY_MAGIC) throw new Error("bad simple reply magic");
        const error = view.getUint32(4);
        const cookie = view.getBigUint64(8);
        const pending = this.#pending.get(cookie);
        if (!pending) throw new Error(`reply to unknown cookie ${cookie}`);
        this.#pending.delete(cookie);
        if (error !== 0) {
          pending.reject(new NbdRequestError(pending.what, error));
          continue;
        }
        pending.resolve(await reader.read(pending.readLength));
      }
      this.#fail(new Error("the server closed the connection"));
    } catch (error) {
      this.#fail(this.#closed ? new Error("the client is closed") : error as Error);
    }
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.values()) {
      pending.reject(new Error(`${pending.what}: ${this.#failure.message}`));
    }
    this.#pending.clear();
  }
}

function u32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value);
  return bytes;
}

function requestBytes(
  type: number,
  flags: number,
  cookie: bigint,
  offset: number,
  length: number,
  data: Uint8Array | undefined,
): Uint8Array {
  const bytes = new Uint8Array(28 + (data?.length ?? 0));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, REQUEST_MAGIC);
  view.setUint16(4, flags);
  view.setUint16(6, type);
  view.setBigUint64(8, cookie);
  view.setBigUint64(16, BigInt(offset));
  view.setUint32(24, length);
  if (data) bytes.set(data, 28);
  return bytes;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

/** Reads exact byte counts from a connection, keeping what it read ahead. */
class ExactReader {
  #conn: Deno.Conn;
  #buffer: Uint8Array;
  #scratch = new Uint8Array(256 * 1024);

  constructor(conn: Deno.Conn, buffer: Uint8Array = new Uint8Array(0)) {
    this.#conn = conn;
    this.#buffer = buffer;
  }

  /** Bytes read ahead and not consumed. */
  rest(): Uint8Array {
    return this.#buffer;
  }

  async read(count: number): Promise<Uint8Array> {
    const bytes = await this.readOrEnd(count);
    if (bytes === null) throw new Error("the server closed the connection");
    return bytes;
  }

  /** Exactly `count` bytes, or null when the connection ends before any of them. */
  async readOrEnd(count: number): Promise<Uint8Array | null> {
    if (this.#buffer.length >= count) {
      const out = this.#buffer.slice(0, count);
      this.#buffer = this.#buffer.subarray(count);
      return out;
    }
    const out = new Uint8Array(count);
    let filled = this.#buffer.length;
    out.set(this.#buffer);
    this.#buffer = new Uint8Array(0);
    while (filled < count) {
      const n = await this.#conn.read(this.#scratch);
      if (n === null) {
        if (filled === 0) return null;
        throw new Error("the server closed the connection mid-message");
      }
      const used = Math.min(n, count - filled);
      out.set(this.#scratch.subarray(0, used), filled);
      filled += used;
      if (used < n) this.#buffer = this.#scratch.slice(used, n);
    }
    return out;
  }
}
