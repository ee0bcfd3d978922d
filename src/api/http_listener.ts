/**
 * The HTTP/1.1 server of the API: an accept loop of its own on a
 * `Deno.Listener` (TCP, TLS or Unix socket alike) handing each request to a
 * fetch handler (the Hono app), with every limit a hostile local client
 * could otherwise push on.
 *
 * Design note. `Deno.serve` (and node:http, which Deno builds on the same
 * accept path) ends the process with an uncaught "Too many open files" when
 * accept fails at the open-file limit, and has no header or body timeouts
 * (measured on Deno 2.9.6 under `prlimit --nofile=64`; node:http's loop
 * stops silently instead). So this module parses HTTP/1.1 itself:
 * - Accept: a failure (EMFILE, ENFILE, ENOBUFS) is logged once per streak
 *   and retried after a back-off doubling from 10 ms to 1 s; it never ends
 *   the loop. A connection over `maxConnections` gets a 503 problem and is
 *   closed at once.
 * - Timeouts, each closing the connection when it fires: the request head
 *   must be complete `headersTimeoutMs` after the connection opens (or after
 *   its first byte, on a kept-alive connection), the body `bodyTimeoutMs`
 *   after the head; a kept-alive connection may sit idle for `idleTimeoutMs`
 *   between requests, and a response write that makes no progress for
 *   `idleTimeoutMs` ends the connection too (a reader that stopped reading).
 * - Bodies need Content-Length (a chunked request body gets 411); one larger
 *   than `maxBodyBytes` gets 413 unread. The declared length is reserved from
 *   `maxBodyBytesInFlight`, shared by all requests, before a byte is read,
 *   and released when the request ends; a request that does not fit gets 503
 *   with Retry-After. Memory for bodies is thus bounded whatever the clients
 *   send or withhold. The head is limited to `maxHeaderBytes` (431).
 * - Responses: Content-Length when the handler's response has one (or when
 *   it is small and complete), else chunked, written as the body stream
 *   yields, so SSE and image streams flow. A request's `signal` aborts when
 *   the client goes away (a read at end of stream while the handler runs,
 *   or a failed write), and the response body stream is cancelled.
 * - Keep-alive for HTTP/1.1 unless either side says `Connection: close`;
 *   HTTP/1.0 closes after each response. Pipelined bytes are kept for the
 *   next request (one read's worth at most while a handler runs).
 *
 * @module
 */

import { problemFor } from "./problem.ts";
import { ServiceError } from "../errors.ts";

/** Default limits of {@link serveHttp}. */
export const HTTP_LISTENER_DEFAULTS = {
  maxConnections: 512,
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  maxHeaderBytes: 64 << 10,
  maxBodyBytes: 4 << 20,
  maxBodyBytesInFlight: 64 << 20,
} as const;

/** Limits and hooks of {@link serveHttp}; every limit has a default in {@link HTTP_LISTENER_DEFAULTS}. */
export interface HttpListenerOptions {
  /** Connections served at once; more are answered 503 and closed. */
  maxConnections?: number;
  /** Time for a request head to arrive, in ms. */
  headersTimeoutMs?: number;
  /** Time for a request body to arrive after its head, in ms. */
  bodyTimeoutMs?: number;
  /** Idle time allowed between requests, and for a stalled response write, in ms. */
  idleTimeoutMs?: number;
  /** Largest request head (request line and headers), in bytes. */
  maxHeaderBytes?: number;
  /** Largest request body, in bytes. */
  maxBodyBytes?: number;
  /** Request body bytes held at once across all requests. */
  maxBodyBytesInFlight?: number;
  /** Log sink for accept failures and handler crashes (default: console.error). */
  log?: (message: string) => void;
}

/** Counters of a running {@link HttpServer}. */
export interface HttpServerStats {
  /** Connections open now. */
  connections: number;
  /** Connections accepted in all. */
  accepted: number;
  /** Connections refused for the connection limit. */
  refused: number;
  /** Accept calls that failed (and were retried). */
  acceptFailures: number;
  /** Connections closed by a header, body, idle or write timeout. */
  timedOut: number;
  /** Requests refused for the in-flight body budget. */
  budgetRefusals: number;
  /** Request body bytes reserved now. */
  bodyBytesInFlight: number;
}

/** A running server from {@link serveHttp}. */
export interface HttpServer {
  /** The listener's address. */
  readonly addr: Deno.Addr;
  /** Current counters. */
  stats(): HttpServerStats;
  /** Stops accepting, closes idle connections, lets requests in progress finish. */
  shutdown(): Promise<void>;
  /** Resolves once shutdown has completed. */
  readonly finished: Promise<void>;
}

/** A fetch handler, as `Deno.serve` and Hono's `app.fetch` have it. */
export type FetchHandler = (request: Request) => Response | Promise<Response>;

type Limits = Required<Omit<HttpListenerOptions, "log">> & { log: (message: string) => void };

const ACCEPT_BACKOFF_MIN_MS = 10;
const ACCEPT_BACKOFF_MAX_MS = 1000;
const READ_BYTES = 16 << 10;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEAD_END = encoder.encode("\r\n\r\n");
const CRLF = encoder.encode("\r\n");
const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  413: "Content Too Large",
  416: "Range Not Satisfiable",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  507: "Insufficient Storage",
};
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HOST = /^[A-Za-z0-9.\-:[\]]{1,255}$/;

/**
 * Serves `handler` on `listener` until shutdown. Never throws for what a
 * client does; an accept failure is retried with back-off.
 */
export function serveHttp(
  listener: Deno.Listener,
  handler: FetchHandler,
  options: HttpListenerOptions = {},
): HttpServer {
  const limits: Limits = {
    ...HTTP_LISTENER_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    log: options.log ?? ((message) => console.error(message)),
  };
  return new Server(listener, handler, limits);
}

class Server implements HttpServer {
  readonly addr: Deno.Addr;
  readonly finished: Promise<void>;
  readonly limits: Limits;
  readonly handler: FetchHandler;
  readonly counters: Omit<HttpServerStats, "connections"> = {
    accepted: 0,
    refused: 0,
    acceptFailures: 0,
    timedOut: 0,
    budgetRefusals: 0,
    bodyBytesInFlight: 0,
  };
  readonly open = new Set<Connection>();
  closing = false;
  #listener: Deno.Listener;
  #accepting: Promise<void>;
  #shutdown: Promise<void> | undefined;
  #finished = Promise.withResolvers<void>();

  constructor(listener: Deno.Listener, handler: FetchHandler, limits: Limits) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.handler = handler;
    this.limits = limits;
    this.finished = this.#finished.promise;
    this.#accepting = this.#acceptLoop();
  }

  stats(): HttpServerStats {
    return { connections: this.open.size, ...this.counters };
  }

  /** Reserves `bytes` of the shared body budget; false when they do not fit. */
  reserve(bytes: number): boolean {
    if (this.counters.bodyBytesInFlight + bytes > this.limits.maxBodyBytesInFlight) {
      this.counters.budgetRefusals += 1;
      return false;
    }
    this.counters.bodyBytesInFlight += bytes;
    return true;
  }

  release(bytes: number): void {
    this.counters.bodyBytesInFlight -= bytes;
  }

  shutdown(): Promise<void> {
    this.#shutdown ??= (async () => {
      this.closing = true;
      try {
        this.#listener.close();
      } catch {
        // already closed
      }
      await this.#accepting;
      await Promise.all([...this.open].map((connection) => connection.drain()));
      this.#finished.resolve();
    })();
    return this.#shutdown;
  }

  async #acceptLoop(): Promise<void> {
    let backoffMs = 0;
    while (!this.closing) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.closing || error instanceof Deno.errors.BadResource) return;
        this.counters.acceptFailures += 1;
        if (backoffMs === 0) {
          this.limits.log(`http: accept failed, backing off: ${(error as Error).message}`);
        }
        backoffMs = Math.min(ACCEPT_BACKOFF_MAX_MS, Math.max(ACCEPT_BACKOFF_MIN_MS, backoffMs * 2));
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        continue;
      }
      backoffMs = 0;
      if (this.closing) {
        closeQuietly(conn);
        return;
      }
      if (this.open.size >= this.limits.maxConnections) {
        this.counters.refused += 1;
        refuse(conn, this.limits.idleTimeoutMs);
        continue;
      }
      this.counters.accepted += 1;
      // TCP (not TLS, whose connection has no such call, nor Unix sockets): no Nagle delay.
      if (typeof (conn as Partial<Deno.TcpConn>).setNoDelay === "function") {
        (conn as Deno.TcpConn).setNoDelay(true);
      }
      const connection = new Connection(conn, this);
      this.open.add(connection);
      connection.done.then(() => this.open.delete(connection));
    }
  }
}

/** Answers a connection over the limit with 503 and closes it, without waiting long. */
function refuse(conn: Deno.Conn, timeoutMs: number): void {
  const bytes = responseBytes(
    new ServiceError("UNAVAILABLE", "The service is at its connection limit; try again later"),
    { "retry-after": "1" },
  );
  const timer = setTimeout(() => closeQuietly(conn), timeoutMs);
  conn.write(bytes).catch(() => {}).finally(() => {
    clearTimeout(timer);
    closeQuietly(conn);
  });
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** A whole problem+json response with `Connection: close`, as bytes. */
function responseBytes(error: ServiceError, extra: Record<string, string> = {}): Uint8Array {
  const document = problemFor(error);
  const body = encoder.encode(JSON.stringify(document));
  const lines = [
    `HTTP/1.1 ${document.status} ${document.title}`,
    "content-type: application/problem+json",
    `content-length: ${body.length}`,
    "connection: close",
    ...Object.entries(extra).map(([name, value]) => `${name}: ${value}`),
  ];
  return concat(encoder.encode(`${lines.join("\r\n")}\r\n\r\n`), body);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A parsed request head. */
interface RequestHead {
  method: string;
  target: string;
  version: "1.0" | "1.1";
  headers: Headers;
}

/** Closes the connection (with an optional problem response) and ends the request loop. */
class Refusal extends Error {
  constructor(readonly problem?: ServiceError, readonly extra: Record<string, string> = {}) {
    super(problem?.message ?? "connection closed");
  }
}

function badRequest(detail: string): Refusal {
  return new Refusal(new ServiceError("INVALID_ARGUMENT", detail));
}

/** Parses the request line and headers (the bytes before the blank line). */
function parseHead(text: string): RequestHead {
  const lines = text.split("\r\n");
  const match = /^([A-Z]{1,16}) (\S+) HTTP\/(1\.[01])$/.exec(lines[0]);
  if (!match) throw badRequest("The request line is not HTTP/1.x");
  const [, method, target, version] = match;
  if (!target.startsWith("/")) throw badRequest("The request target must be a path");
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!TOKEN.test(name)) throw badRequest("A request header is malformed");
    try {
      headers.append(name, line.slice(colon + 1).trim());
    } catch {
      throw badRequest(`The request header ${name} has an invalid value`);
    }
  }
  return { method, target, version: version as "1.0" | "1.1", headers };
}

/**
 * The declared body length: 0 without one, "chunked" for a chunked body;
 * Refusal for another transfer coding, a malformed length or one over `maxBodyBytes`.
 */
function bodyLength(head: RequestHead, maxBodyBytes: number): number | "chunked" {
  const coding = head.headers.get("transfer-encoding");
  if (coding !== null) {
    if (/^chunked$/i.test(coding.trim()) && !head.headers.has("content-length")) return "chunked";
    throw badRequest("Only the chunked transfer coding is accepted, without Content-Length");
  }
  const text = head.headers.get("content-length");
  if (text === null) return 0;
  if (!/^\d{1,15}$/.test(text)) throw badRequest("Content-Length is not one decimal number");
  const length = Number(text);
  if (length > maxBodyBytes) throw tooLarge(maxBodyBytes);
  return length;
}

function tooLarge(maxBodyBytes: number): Refusal {
  return new Refusal(
    new ServiceError("PAYLOAD_TOO_LARGE", `The request body exceeds ${maxBodyBytes} bytes`, {
      field: "body",
    }),
  );
}

/** One client connection: requests one after another until either side closes. */
class Connection {
  readonly done: Promise<void>;
  #conn: Deno.Conn;
  #server: Server;
  #buffer = new Uint8Array(READ_BYTES);
  #start = 0;
  #end = 0;
  #eof = false;
  #closed = false;
  #pendingRead: Promise<boolean> | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #busy = false;
  #idleWaiters: Array<() => void> = [];
  #requestAbort: AbortController | undefined;
  #responseReader: ReadableStreamDefaultReader<Uint8Array> | undefined;

  constructor(conn: Deno.Conn, server: Server) {
    this.#conn = conn;
    this.#server = server;
    this.done = this.#run();
  }

  /** Closes at once when idle, else after the request in progress. */
  drain(): Promise<void> {
    if (!this.#busy) this.#close();
    return this.done;
  }

  async #run(): Promise<void> {
    const limits = this.#server.limits;
    let first = true;
    try {
      while (!this.#closed && !this.#server.closing) {
        if (!first) {
          this.#arm(limits.idleTimeoutMs);
          if (this.#start === this.#end && !(await this.#fill())) return;
        }
        first = false;
        this.#arm(limits.headersTimeoutMs);
        const head = await this.#readHead();
        if (head === undefined) return;
        const keepAlive = await this.#serveOne(head);
        if (!keepAlive) return;
      }
    } catch (error) {
      if (error instanceof Refusal && error.problem && !this.#closed) {
        this.#arm(limits.idleTimeoutMs);
        await this.#write(responseBytes(error.problem, error.extra)).catch(() => {});
      }
    } finally {
      this.#disarm();
      this.#close();
      for (const resolve of this.#idleWaiters.splice(0)) resolve();
    }
  }

  /** Sets the one deadline of the connection: when it passes, the connection closes. */
  #arm(ms: number): void {
    this.#disarm();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#server.counters.timedOut += 1;
      this.#close();
    }, ms);
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#requestAbort?.abort(new DOMException("The client went away", "AbortError"));
    // A response still streaming ends now: its producer sees the cancel.
    this.#responseReader?.cancel().catch(() => {});
    closeQuietly(this.#conn);
  }

  /** Reads more into the buffer; false at end of stream or once closed. One read at a time. */
  #fill(): Promise<boolean> {
    this.#pendingRead ??= this.#readMore().finally(() => {
      this.#pendingRead = undefined;
    });
    return this.#pendingRead;
  }

  async #readMore(): Promise<boolean> {
    if (this.#eof || this.#closed) return false;
    if (this.#start > 0 && this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#buffer.length - this.#end < READ_BYTES) {
      const grown = new Uint8Array(
        Math.max(this.#buffer.length, this.#end - this.#start + READ_BYTES) * 2,
      );
      grown.set(this.#buffer.subarray(this.#start, this.#end));
      this.#end -= this.#start;
      this.#start = 0;
      this.#buffer = grown;
    }
    let count: number | null;
    try {
      count = await this.#conn.read(this.#buffer.subarray(this.#end));
    } catch {
      count = null;
    }
    if (count === null) {
      this.#eof = true;
      return false;
    }
    this.#end += count;
    return true;
  }

  /** The next request head, or undefined when the client closed before sending one. */
  async #readHead(): Promise<RequestHead | undefined> {
    const max = this.#server.limits.maxHeaderBytes;
    let searched = this.#start;
    for (;;) {
      const at = indexOf(
        this.#buffer.subarray(0, this.#end),
        HEAD_END,
        Math.max(this.#start, searched - 3),
      );
      if (at >= 0 && at - this.#start <= max) {
        const text = decoder.decode(this.#buffer.subarray(this.#start, at));
        this.#start = at + HEAD_END.length;
        return parseHead(text.replace(/^(\r\n)+/, ""));
      }
      searched = this.#end;
      if (at >= 0 || this.#end - this.#start > max) {
        throw new Refusal(
          new ServiceError("PAYLOAD_TOO_LARGE", `The request head exceeds ${max} bytes (431)`),
        );
      }
      if (!(await this.#fill())) {
        if (this.#start === this.#end) return undefined;
        throw new Refusal();
      }
    }
  }

  /** Reads a body of `length` bytes (reserved by the caller) under the body timeout. */
  async #readBody(length: number, head: RequestHead): Promise<Uint8Array<ArrayBuffer>> {
    const body = new Uint8Array(length);
    let done = Math.min(length, this.#end - this.#start);
    body.set(this.#buffer.subarray(this.#start, this.#start + done));
    this.#start += done;
    if (done < length && /^100-continue$/i.test(head.headers.get("expect") ?? "")) {
      await this.#write(encoder.encode("HTTP/1.1 100 Continue\r\n\r\n"));
    }
    this.#arm(this.#server.limits.bodyTimeoutMs);
    while (done < length) {
      let count: number | null;
      try {
        count = await this.#conn.read(body.subarray(done));
      } catch {
        count = null;
      }
      if (count === null) throw new Refusal();
      done += count;
    }
    return body;
  }

  /** Reads a chunked body (trailers dropped) of at most maxBodyBytes under the body timeout. */
  async #readChunked(head: RequestHead): Promise<Uint8Array<ArrayBuffer>> {
    const max = this.#server.limits.maxBodyBytes;
    if (/^100-continue$/i.test(head.headers.get("expect") ?? "")) {
      await this.#write(encoder.encode("HTTP/1.1 100 Continue\r\n\r\n"));
    }
    this.#arm(this.#server.limits.bodyTimeoutMs);
    const parts: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const line = await this.#readLine();
      const size = /^([0-9A-Fa-f]{1,8})(;.*)?$/.exec(line);
      if (!size) throw badRequest("A chunk size line is malformed");
      const count = parseInt(size[1], 16);
      if (count === 0) break;
      if (total + count > max) throw tooLarge(max);
      while (this.#end - this.#start < count + 2) {
        if (!(await this.#fill())) throw new Refusal();
      }
      parts.push(this.#buffer.slice(this.#start, this.#start + count));
      total += count;
      if (
        this.#buffer[this.#start + count] !== 13 || this.#buffer[this.#start + count + 1] !== 10
      ) {
        throw badRequest("A chunk does not end with CRLF");
      }
      this.#start += count + 2;
    }
    while ((await this.#readLine()) !== "");
    const body = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      body.set(part, at);
      at += part.length;
    }
    return body;
  }

  /** One CRLF-terminated line of at most maxHeaderBytes, without the CRLF. */
  async #readLine(): Promise<string> {
    for (;;) {
      const at = indexOf(this.#buffer.subarray(0, this.#end), CRLF, this.#start);
      if (at >= 0) {
        const line = decoder.decode(this.#buffer.subarray(this.#start, at));
        this.#start = at + 2;
        return line;
      }
      if (this.#end - this.#start > this.#server.limits.maxHeaderBytes) {
        throw badRequest("A chunk line is too long");
      }
      if (!(await this.#fill())) throw new Refusal();
    }
  }

  /** Serves one request; true when the connection stays open for another. */
  async #serveOne(head: RequestHead): Promise<boolean> {
    const server = this.#server;
    const declared = bodyLength(head, server.limits.maxBodyBytes);
    // A chunked body may grow to the limit: that much is reserved for it.
    const length = declared === "chunked" ? server.limits.maxBodyBytes : declared;
    if (length > 0 && !server.reserve(length)) {
      throw new Refusal(
        new ServiceError(
          "UNAVAILABLE",
          "The service holds too many request bodies; try again later",
        ),
        { "retry-after": "1" },
      );
    }
    this.#busy = true;
    try {
      const body = declared === "chunked"
        ? await this.#readChunked(head)
        : length > 0
        ? await this.#readBody(length, head)
        : undefined;
      this.#disarm();
      const keepAlive = head.version === "1.1" &&
        !/\bclose\b/i.test(head.headers.get("connection") ?? "");
      const response = await this.#handle(head, body);
      const keep = keepAlive && !/\bclose\b/i.test(response.headers.get("connection") ?? "");
      await this.#respond(head, response, keep);
      return keep && !this.#closed;
    } finally {
      if (length > 0) server.release(length);
      this.#busy = false;
      if (server.closing) this.#close();
    }
  }

  async #handle(head: RequestHead, body: Uint8Array<ArrayBuffer> | undefined): Promise<Response> {
    const host = head.headers.get("host") ?? "";
    const authority = HOST.test(host) ? host : "localhost";
    const abort = new AbortController();
    this.#requestAbort = abort;
    // A read while the handler runs notices a client that goes away; pipelined bytes stay buffered.
    if (this.#start === this.#end) {
      // End of stream while the handler runs: the client is gone (aborts, cancels the response).
      this.#fill().then((more) => {
        if (!more) this.#close();
      });
    }
    let url: URL;
    try {
      url = new URL(`http://${authority}${head.target}`);
    } catch {
      url = new URL(`http://localhost${head.target}`);
    }
    try {
      const request = new Request(url, {
        method: head.method,
        headers: head.headers,
        body: head.method === "GET" || head.method === "HEAD" ? undefined : body,
        signal: abort.signal,
      });
      return await this.#server.handler(request);
    } catch (error) {
      this.#server.limits.log(`http: ${head.method} ${head.target}: ${error}`);
      const document = problemFor(error);
      return new Response(JSON.stringify(document), {
        status: document.status,
        headers: { "content-type": "application/problem+json" },
      });
    }
  }

  async #respond(head: RequestHead, response: Response, keepAlive: boolean): Promise<void> {
    const noBody = head.method === "HEAD" || response.status === 204 || response.status === 304;
    const reason = response.statusText || STATUS_TEXT[response.status] || "Status";
    const lines = [`HTTP/1.1 ${response.status} ${reason}`];
    for (const [name, value] of response.headers) {
      if (name === "connection" || name === "transfer-encoding" || name === "keep-alive") continue;
      lines.push(`${name}: ${value}`);
    }
    lines.push(`connection: ${keepAlive ? "keep-alive" : "close"}`);
    const declared = response.headers.get("content-length") !== null;
    if (noBody || response.body === null) {
      await response.body?.cancel().catch(() => {});
      if (!declared && !noBody) lines.push("content-length: 0");
      await this.#send(lines, new Uint8Array(0));
      return;
    }
    const reader = response.body.getReader();
    this.#responseReader = reader;
    try {
      let next: Promise<ReadableStreamReadResult<Uint8Array>> | undefined = reader.read();
      let first: Uint8Array | undefined;
      if (!declared) {
        // A body already complete (a string or bytes, as most handlers give) gets a length;
        // one still being produced (an event stream) is sent chunked from now on.
        const settled = await settledSoon(next);
        if (settled !== undefined) {
          next = settled.done ? undefined : reader.read();
          first = settled.value;
          const after = next && await settledSoon(next);
          if (settled.done || after?.done) {
            const whole = first ?? new Uint8Array(0);
            lines.push(`content-length: ${whole.length}`);
            await this.#send(lines, whole);
            return;
          }
        }
        lines.push("transfer-encoding: chunked");
      }
      await this.#send(lines, first === undefined ? new Uint8Array(0) : frame(first, !declared));
      while (next !== undefined) {
        const { value, done } = await next;
        if (this.#closed) break;
        next = done ? undefined : reader.read();
        const bytes = done ? (declared ? undefined : encoder.encode("0\r\n\r\n")) : value;
        if (bytes === undefined || bytes.length === 0) continue;
        this.#arm(this.#server.limits.idleTimeoutMs);
        await this.#write(done || declared ? bytes : frame(bytes, true));
        this.#disarm();
      }
      if (this.#closed) await reader.cancel().catch(() => {});
    } catch (error) {
      this.#close();
      await reader.cancel(error).catch(() => {});
    } finally {
      this.#responseReader = undefined;
      this.#disarm();
    }
  }

  /** Writes the head `lines` and the first body bytes under the write timeout. */
  async #send(lines: string[], body: Uint8Array): Promise<void> {
    this.#arm(this.#server.limits.idleTimeoutMs);
    await this.#write(concat(encoder.encode(`${lines.join("\r\n")}\r\n\r\n`), body));
    this.#disarm();
  }

  async #write(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length;) {
      if (this.#closed) throw new Refusal();
      done += await this.#conn.write(bytes.subarray(done));
    }
  }
}

/**
 * `promise`'s value when it settles within a few microtask turns (a body
 * stream over bytes already there answers in one or two), else undefined.
 */
function settledSoon<T>(promise: Promise<T>): Promise<T | undefined> {
  let turns: Promise<undefined> = Promise.resolve(undefined);
  for (let i = 0; i < 4; i++) turns = turns.then(() => undefined);
  return Promise.race([promise, turns]);
}

/** `bytes` as one chunk of a chunked body when `chunked`, else as is. */
function frame(bytes: Uint8Array, chunked: boolean): Uint8Array {
  if (!chunked || bytes.length === 0) return bytes;
  const out = new Uint8Array(bytes.length + 32);
  const size = encoder.encodeInto(`${bytes.length.toString(16)}\r\n`, out).written;
  out.set(bytes, size);
  out.set(CRLF, size + bytes.length);
  return out.subarray(0, size + bytes.length + 2);
}

/** Index of `needle` in `haystack` from `from`, or -1. */
function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0];
  for (let i = haystack.indexOf(first, from); i >= 0; i = haystack.indexOf(first, i + 1)) {
    if (i + needle.length > haystack.length) return -1;
    let match = true;
    for (let j = 1; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) {
        match = false;
        break;
      }
    }
    if (match) return i;
  }
  return -1;
}
