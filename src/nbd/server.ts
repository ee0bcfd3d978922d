/**
 * The NBD server: listeners on TCP (127.0.0.1 by default) and/or a Unix
 * socket, one {@link Connection} per client, each running the handshake and
 * then the transmission phase. A failing connection (malformed input, a
 * client that vanishes) ends alone; the server and the other connections go
 * on. A client that has not chosen an export within the handshake timeout
 * (30 s by default) is disconnected. {@link NbdServer.close} stops accepting, lets every connection finish
 * the requests it has received (later ones get NBD_ESHUTDOWN), then closes
 * them. When an export ends (NbdExport.ended: its snapshot was destroyed),
 * its connections answer later requests with NBD_ESHUTDOWN and are closed
 * after a grace of {@link DEFAULT_ENDED_GRACE_MS} (`endedGraceMs`), so that a
 * client learns the export is gone without hanging on it.
 *
 * There is no TLS and no authentication in NBD as served here: anyone who
 * reaches the socket can read and write every export. Keep TCP on loopback
 * (the default) and the Unix socket in a directory only the service's users
 * can enter.
 *
 * Sockets are Deno.listen/Deno.Conn: measured against node:net on this
 * machine (tests/bench/socket_api.ts), they moved bulk data as fast or
 * faster and answered small request/reply round trips in about half the time.
 *
 * @module
 */

import { refuseExistingUnixPath } from "./unix_path.ts";
import { ServiceError } from "../errors.ts";
import { BufferPool } from "./buffer_pool.ts";
import type { ExportProvider } from "./export.ts";
import { negotiate } from "./handshake.ts";
import { type NbdLogger, silentLogger } from "./log.ts";
import { ReplyWriter } from "./reply_writer.ts";
import { SocketReader } from "./socket_reader.ts";
import type { ReadProbeBoard } from "./read_probes.ts";
import { NbdStats } from "./stats.ts";
import { Transmission } from "./transmission.ts";

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_CONNECTIONS = 256;
/** How long the connections of an ended export stay open, answering NBD_ESHUTDOWN. */
export const DEFAULT_ENDED_GRACE_MS = 2000;
const ACCEPT_RETRY_MIN_MS = 10;
const ACCEPT_RETRY_MAX_MS = 1000;

/** Where and how {@link startNbdServer} listens. */
export interface NbdServerOptions {
  /**
   * TCP listener; `port` 0 picks a free port. `hostname` defaults to
   * 127.0.0.1. `reusePort` lets several listeners (Workers) share the port
   * (SO_REUSEPORT; needs --unstable-net).
   */
  tcp?: { hostname?: string; port: number; reusePort?: boolean };
  /** Unix socket path; must not exist yet; removed again by close(). */
  unixPath?: string;
  /** Log sink (default: silent). */
  logger?: NbdLogger;
  /** A client that has not chosen an export after this many ms is disconnected (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Where connections and requests are counted (default: a new NbdStats, see `stats`). */
  stats?: NbdStats;
  /** Connections served at once; a client over the limit is closed at once (default 256). */
  maxConnections?: number;
  /**
   * Serve on this many blocking Workers (src/nbd/worker/worker_server.ts;
   * needs --allow-ffi) instead of on this thread; 0 or absent: this thread.
   */
  workers?: number;
  /** With `workers`: the pool's bound (default 16, at most `maxConnections`). */
  maxWorkers?: number;
  /** With `workers`: connections idle this long are dropped while the pool is saturated (default 60 s). */
  idleTimeoutMs?: number;
  /** A connection to an export that ended is closed this many ms later (default 2 s). */
  endedGraceMs?: number;
  /** Read probes every READ is shown to (src/nbd/read_probes.ts; none by default). */
  readProbes?: ReadProbeBoard;
}

/** A running NBD server. */
export interface NbdServer {
  /** The TCP port listened on, when TCP was asked for. */
  readonly tcpPort?: number;
  /** The Unix socket path, when one was asked for. */
  readonly unixPath?: string;
  /** Connections currently open. */
  readonly connections: number;
  /** Connection and request counters. */
  readonly stats: NbdStats;
  /** Stops listening, finishes in-flight requests, closes every connection. */
  close(): Promise<void>;
}

/**
 * Starts serving the exports of `provider`. Throws ServiceError
 * INVALID_ARGUMENT when no listener is asked for, CONFLICT when the Unix
 * socket path exists or the port is taken, and UNAVAILABLE when listening
 * fails otherwise.
 */
export async function startNbdServer(
  provider: ExportProvider,
  options: NbdServerOptions,
): Promise<NbdServer> {
  if (options.tcp === undefined && options.unixPath === undefined) {
    throw new ServiceError("INVALID_ARGUMENT", "Cannot start the NBD server: no listener given");
  }
  const logger = guardedLogger(options.logger ?? silentLogger);
  if ((options.workers ?? 0) > 0) {
    const { startWorkerServer } = await import("./worker/worker_server.ts");
    return await startWorkerServer(provider, { ...options, logger, workers: options.workers! });
  }
  const listeners: Deno.Listener[] = [];
  let tcpPort: number | undefined;
  try {
    if (options.tcp !== undefined) {
      const hostname = options.tcp.hostname ?? "127.0.0.1";
      const listener = listen({
        transport: "tcp",
        hostname,
        port: options.tcp.port,
        ...(options.tcp.reusePort ? { reusePort: true } : {}),
      });
      listeners.push(listener);
      tcpPort = (listener.addr as Deno.NetAddr).port;
      logger("info", `nbd: listening on ${hostname}:${tcpPort}`);
    }
    if (options.unixPath !== undefined) {
      await refuseExistingUnixPath(options.unixPath);
      listeners.push(listen({ transport: "unix", path: options.unixPath }));
      logger("info", `nbd: listening on ${options.unixPath}`);
    }
  } catch (error) {
    listeners.forEach((listener) => listener.close());
    throw error;
  }
  return new Server(provider, listeners, {
    tcpPort,
    unixPath: options.unixPath,
    logger,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    stats: options.stats ?? new NbdStats(),
    maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    endedGraceMs: options.endedGraceMs ?? DEFAULT_ENDED_GRACE_MS,
    readProbes: options.readProbes,
  });
}

class Server implements NbdServer {
  readonly tcpPort?: number;
  readonly unixPath?: string;
  readonly stats: NbdStats;
  #provider: ExportProvider;
  #listeners: Deno.Listener[];
  #logger: NbdLogger;
  #handshakeTimeoutMs: number;
  #maxConnections: number;
  #endedGraceMs: number;
  #readProbes: ReadProbeBoard | undefined;
  #open = new Set<Connection>();
  #accepting: Promise<void>[];
  #closed: Promise<void> | undefined;

  constructor(
    provider: ExportProvider,
    listeners: Deno.Listener[],
    options: {
      tcpPort?: number;
      unixPath?: string;
      logger: NbdLogger;
      handshakeTimeoutMs: number;
      stats: NbdStats;
      maxConnections: number;
      endedGraceMs: number;
      readProbes?: ReadProbeBoard;
    },
  ) {
    this.#readProbes = options.readProbes;
    this.stats = options.stats;
    this.#provider = provider;
    this.#listeners = listeners;
    this.#logger = options.logger;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs;
    this.#maxConnections = options.maxConnections;
    this.#endedGraceMs = options.endedGraceMs;
    this.tcpPort = options.tcpPort;
    this.unixPath = options.unixPath;
    this.#accepting = listeners.map((listener) => this.#accept(listener));
  }

  get connections(): number {
    return this.#open.size;
  }

  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    for (const listener of this.#listeners) {
      try {
        listener.close();
      } catch {
        // already closed
      }
    }
    await Promise.all(this.#accepting);
    await Promise.all([...this.#open].map((connection) => connection.shutdown()));
    if (this.unixPath !== undefined) await Deno.remove(this.unixPath).catch(() => {});
    this.#logger("info", "nbd: server closed");
  }

  /** Accepts until close; a failed accept (EMFILE) backs off from 10 ms to 1 s and goes on. */
  async #accept(listener: Deno.Listener): Promise<void> {
    let retryMs = 0;
    while (true) {
      let stream: Deno.Conn;
      try {
        stream = await listener.accept();
      } catch (error) {
        if (this.#closed !== undefined || error instanceof Deno.errors.BadResource) return;
        if (retryMs === 0) {
          this.#logger("error", `nbd: accept failed, backing off: ${describe(error)}`);
        }
        retryMs = Math.min(ACCEPT_RETRY_MAX_MS, Math.max(ACCEPT_RETRY_MIN_MS, retryMs * 2));
        await new Promise((resolve) => setTimeout(resolve, retryMs));
        continue;
      }
      retryMs = 0;
      if (this.#closed !== undefined) {
        stream.close();
        return;
      }
      if (this.#open.size >= this.#maxConnections) {
        this.#logger("debug", `nbd: refused a connection: ${this.#maxConnections} are open`);
        stream.close();
        continue;
      }
      if (stream.remoteAddr.transport === "tcp") (stream as Deno.TcpConn).setNoDelay(true);
      const connection = new Connection(stream, this.#provider, {
        logger: this.#logger,
        handshakeTimeoutMs: this.#handshakeTimeoutMs,
        stats: this.stats,
        endedGraceMs: this.#endedGraceMs,
        readProbes: this.#readProbes,
      });
      this.stats.opened();
      this.#open.add(connection);
      connection.done.then(() => {
        this.stats.closed();
        this.#open.delete(connection);
      });
    }
  }
}

/** One client connection: handshake, then transmission. */
class Connection {
  readonly done: Promise<void>;
  #stream: Deno.Conn;
  #reader: SocketReader;
  #writer: ReplyWriter;
  #pool: BufferPool;
  #logger: NbdLogger;
  #peer: string;
  #transmission: Transmission | undefined;
  #closing = false;
  #closed = false;
  #handshakeTimeoutMs: number;
  #endedGraceMs: number;
  #stats: NbdStats;
  #readProbes: ReadProbeBoard | undefined;

  constructor(
    stream: Deno.Conn,
    provider: ExportProvider,
    options: {
      logger: NbdLogger;
      handshakeTimeoutMs: number;
      stats: NbdStats;
      endedGraceMs: number;
      readProbes?: ReadProbeBoard;
    },
  ) {
    this.#readProbes = options.readProbes;
    const logger = options.logger;
    this.#endedGraceMs = options.endedGraceMs;
    this.#stats = options.stats;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs;
    this.#stream = stream;
    this.#pool = new BufferPool();
    this.#reader = new SocketReader(stream);
    this.#writer = new ReplyWriter(stream, { pool: this.#pool });
    this.#logger = logger;
    const addr = stream.remoteAddr;
    this.#peer = addr.transport === "tcp" ? `${addr.hostname}:${addr.port}` : "unix socket";
    this.done = this.#serve(provider);
  }

  async shutdown(): Promise<void> {
    this.#closing = true;
    if (this.#transmission !== undefined) await this.#transmission.quiesce();
    this.#close();
    await this.done;
  }

  async #serve(provider: ExportProvider): Promise<void> {
    const logger = this.#logger;
    logger("debug", `nbd: connection from ${this.#peer}`);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#close();
    }, this.#handshakeTimeoutMs);
    try {
      let session;
      try {
        session = await negotiate(this.#reader, this.#writer, { provider, logger });
      } finally {
        clearTimeout(timer);
      }
      if (session === undefined || this.#closing) return;
      logger("debug", `nbd: ${this.#peer} chose export "${session.export.name}"`);
      this.#transmission = new Transmission(session, {
        reader: this.#reader,
        writer: this.#writer,
        pool: this.#pool,
      }, { logger, stats: this.#stats, readProbes: this.#readProbes });
      const cancelEnd = this.#endWhen(session.export.ended);
      try {
        await this.#transmission.run();
      } finally {
        cancelEnd();
      }
    } catch (error) {
      if (timedOut) logger("warn", `nbd: closed ${this.#peer}: no export chosen in time`);
      else if (!this.#closing) logger("warn", `nbd: closing ${this.#peer}: ${describe(error)}`);
    } finally {
      await this.#writer.drained();
      this.#close();
      logger("debug", `nbd: ${this.#peer} disconnected`);
    }
  }

  /** Shuts the connection down a grace after `ended` aborts; returns what cancels that. */
  #endWhen(ended: AbortSignal | undefined): () => void {
    if (ended === undefined) return () => {};
    let timer: ReturnType<typeof setTimeout> | undefined;
    const start = () => {
      this.#logger(
        "debug",
        `nbd: the export of ${this.#peer} ended; closing in ${this.#endedGraceMs} ms`,
      );
      timer = setTimeout(() => void this.shutdown(), this.#endedGraceMs);
    };
    if (ended.aborted) start();
    else ended.addEventListener("abort", start, { once: true });
    return () => {
      ended.removeEventListener("abort", start);
      clearTimeout(timer);
    };
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#stream.close();
    } catch {
      // the peer already tore it down
    }
  }
}

function listen(
  options:
    | (Deno.TcpListenOptions & { transport: "tcp" })
    | Deno.UnixListenOptions & {
      transport: "unix";
    },
): Deno.Listener {
  try {
    return options.transport === "tcp" ? Deno.listen(options) : Deno.listen(options);
  } catch (error) {
    const where = options.transport === "tcp"
      ? `${options.hostname}:${options.port}`
      : options.path;
    const code = error instanceof Deno.errors.AddrInUse ? "CONFLICT" : "UNAVAILABLE";
    throw new ServiceError(code, `Cannot listen on ${where}: ${describe(error)}`, {
      cause: error,
    });
  }
}

function guardedLogger(logger: NbdLogger): NbdLogger {
  return (level, message) => {
    try {
      logger(level, message);
    } catch {
      // a failing log sink must not break a connection
    }
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
