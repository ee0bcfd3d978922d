/**
 * The NBD server on a pool of blocking Workers (DATA-PLANE.md shape B), the
 * owner's side: it makes the listening sockets (TCP and/or Unix) through
 * libc, starts `workers` Workers (connection_worker.ts) that accept on them
 * and serve one connection each with the server's own protocol code, and
 * answers their requests (owner_slot.ts) by running the real exports of
 * `provider`: handshake lookups, every request an export has no fast path
 * for, and the fast path's prepare and view requests. The owner stays the
 * one place where engine state changes.
 *
 * Connections beyond the pool: a Worker taking a connection while no other
 * waits asks for more, and the pool doubles (a Worker starts in about 40
 * ms; nbdcopy opens four connections at once), up to `maxWorkers` (default 16, never above
 * `maxConnections`). When every Worker is busy at that bound, connections
 * waiting to be accepted are refused (accepted and closed at once, with a
 * log line) within a second, never left hanging, and Workers drop
 * connections idle for `idleTimeoutMs` (default 60 s) to make room. A
 * Worker that fails (an uncaught error: its connection is lost) is
 * replaced while the pool is below its starting size.
 *
 * @module
 */

import { refuseExistingUnixPath } from "../unix_path.ts";
import { ServiceError } from "../../errors.ts";
import type { ExportProvider, NbdExport } from "../export.ts";
import { type NbdLogger, type NbdLogLevel, silentLogger } from "../log.ts";
import { NBD_STATS_BYTES, NbdStats } from "../stats.ts";
import { DEFAULT_ENDED_GRACE_MS, type NbdServer, type NbdServerOptions } from "../server.ts";
import { DelegatedFlag } from "./delegated_export.ts";
import { describeExport } from "./export_info.ts";
import { fastPathOf } from "./fast_path.ts";
import { libc, Sys } from "./libc.ts";
import { type ListenSocket, listenTcp, listenUnix } from "./listen_socket.ts";
import { WORKER_MODULE_URL } from "./worker_module.ts";
import { newSlot, Op, serveSlot, type SlotRequest, wakeSlot } from "./owner_slot.ts";
import {
  newPrepareQueue,
  preparesInFlight,
  servePrepareQueue,
  wakePrepareQueue,
} from "./prepare_queue.ts";
import { Control, CONTROL_BYTES, type WorkerInit, type WorkerMessage } from "./worker_protocol.ts";

const DEFAULT_MAX_WORKERS = 16;
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
const SATURATION_CHECK_MS = 500;
const EXIT_WAIT_MS = 5_000;
const MAX_EXTENTS = 100_000;

/** Options of the Worker plane, beyond {@link NbdServerOptions}. */
export interface WorkerPlaneOptions {
  /** Workers started at once (at least 1). */
  workers: number;
  /** The pool's bound (default 16, at most `maxConnections`). */
  maxWorkers?: number;
  /** Connections idle this long are dropped while the pool is saturated (default 60 s). */
  idleTimeoutMs?: number;
}

/** Starts the Worker plane serving `provider`. Errors as {@link startNbdServer}. */
export async function startWorkerServer(
  provider: ExportProvider,
  options: NbdServerOptions & WorkerPlaneOptions,
): Promise<NbdServer> {
  if (options.tcp === undefined && options.unixPath === undefined) {
    throw new ServiceError("INVALID_ARGUMENT", "Cannot start the NBD server: no listener given");
  }
  const logger = options.logger ?? silentLogger;
  try {
    libc();
  } catch (error) {
    throw new ServiceError(
      "UNAVAILABLE",
      `Cannot start NBD Workers: libc cannot be opened through FFI (--allow-ffi): ${error}`,
      { cause: error },
    );
  }
  const sockets: ListenSocket[] = [];
  try {
    if (options.tcp !== undefined) {
      const hostname = options.tcp.hostname ?? "127.0.0.1";
      sockets.push(listenTcp(hostname, options.tcp.port));
      logger(
        "info",
        `nbd: listening on ${hostname}:${sockets[0].port} (${options.workers} Workers)`,
      );
    }
    if (options.unixPath !== undefined) {
      await refuseExistingUnixPath(options.unixPath);
      sockets.push(listenUnix(options.unixPath));
      logger("info", `nbd: listening on ${options.unixPath}`);
    }
  } catch (error) {
    for (const socket of sockets) libc().close(socket.fd);
    throw error;
  }
  const server = new WorkerServer(provider, sockets, { ...options, logger });
  try {
    await server.started;
  } catch (error) {
    await server.close();
    throw error;
  }
  return server;
}

class WorkerServer implements NbdServer {
  readonly tcpPort?: number;
  readonly unixPath?: string;
  readonly stats: NbdStats;
  /** Resolves once a Worker waits for connections; UNAVAILABLE when the first ones fail to start. */
  readonly started: Promise<void>;
  #startedOutcome!: { resolve: () => void; reject: (error: Error) => void };
  #anyReady = false;
  readonly #provider: ExportProvider;
  readonly #sockets: ListenSocket[];
  readonly #logger: NbdLogger;
  readonly #control = new SharedArrayBuffer(CONTROL_BYTES);
  readonly #controlInts = new Int32Array(this.#control);
  readonly #wakeFd: number;
  readonly #handshakeTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #endedGraceMs: number;
  readonly #readProbes: SharedArrayBuffer | undefined;
  readonly #maxWorkers: number;
  readonly #minWorkers: number;
  readonly #workers = new Set<PlaneWorker>();
  readonly #timer: ReturnType<typeof setInterval>;
  #closing = false;
  #closed: Promise<void> | undefined;
  /** Workers started that have not begun waiting for connections yet. */
  #starting = 0;

  constructor(
    provider: ExportProvider,
    sockets: ListenSocket[],
    options: NbdServerOptions & WorkerPlaneOptions & { logger: NbdLogger },
  ) {
    this.started = new Promise((resolve, reject) => this.#startedOutcome = { resolve, reject });
    this.#provider = provider;
    this.#sockets = sockets;
    this.#logger = options.logger;
    this.stats = options.stats ?? new NbdStats();
    this.tcpPort = options.tcp !== undefined ? sockets[0].port : undefined;
    this.unixPath = options.unixPath;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? 30_000;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#endedGraceMs = options.endedGraceMs ?? DEFAULT_ENDED_GRACE_MS;
    this.#readProbes = options.readProbes?.buffer;
    const workers = Math.max(1, options.workers);
    this.#minWorkers = workers;
    this.#maxWorkers = Math.max(
      workers,
      Math.min(options.maxWorkers ?? DEFAULT_MAX_WORKERS, options.maxConnections ?? 256),
    );
    Atomics.store(this.#controlInts, Control.MAX_WORKERS, this.#maxWorkers);
    const spinners = Math.max(1, Math.floor(navigator.hardwareConcurrency / 2));
    Atomics.store(this.#controlInts, Control.MAX_SPINNERS, spinners);
    this.#wakeFd = libc().eventfd(0, Sys.EFD_NONBLOCK | Sys.EFD_CLOEXEC);
    for (let i = 0; i < workers; i++) this.#spawn();
    this.#timer = setInterval(() => this.#refuseWhenSaturated(), SATURATION_CHECK_MS);
  }

  get connections(): number {
    return this.stats.connectionsOpen;
  }

  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    libc().write(this.#wakeFd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
    await Promise.all([...this.#workers].map((worker) => worker.stop()));
    for (const socket of this.#sockets) libc().close(socket.fd);
    libc().close(this.#wakeFd);
    if (this.unixPath !== undefined) await Deno.remove(this.unixPath).catch(() => {});
    this.#logger("info", "nbd: server closed");
  }

  #spawn(): void {
    let ready = false;
    const stats = new SharedArrayBuffer(NBD_STATS_BYTES);
    this.stats.include(new NbdStats(stats));
    const worker = new PlaneWorker(this.#provider, {
      logger: this.#logger,
      stats: this.stats,
      onBusy: () => this.#grow(),
      onReady: () => {
        this.#starting--;
        ready = true;
        this.#anyReady = true;
        this.#startedOutcome.resolve();
      },
      onExit: (failure) => {
        if (!ready && !this.#anyReady && failure !== undefined) {
          this.#startedOutcome.reject(
            new ServiceError("UNAVAILABLE", `Cannot start NBD Workers: ${failure}`),
          );
        }
        this.#workers.delete(worker);
        Atomics.sub(this.#controlInts, Control.WORKERS, 1);
        if (!ready) this.#starting--;
        // Only a Worker that had started is replaced: one failing at start would fail again.
        if (ready && !this.#closing && this.#workers.size < this.#minWorkers) this.#spawn();
      },
    });
    this.#workers.add(worker);
    this.#starting++;
    Atomics.add(this.#controlInts, Control.WORKERS, 1);
    worker.start({
      type: "init",
      slot: worker.slot,
      prepares: worker.prepares,
      control: this.#control,
      stats,
      listenFds: this.#sockets.map((socket) => socket.fd),
      wakeFd: this.#wakeFd,
      messageFd: worker.messageFd,
      endedGraceMs: this.#endedGraceMs,
      ...(this.#readProbes ? { readProbes: this.#readProbes } : {}),
      handshakeTimeoutMs: this.#handshakeTimeoutMs,
      idleTimeoutMs: this.#idleTimeoutMs,
    });
  }

  /** Doubles the pool (up to the bound) unless a Worker is waiting or about to. */
  #grow(): void {
    if (this.#closing || this.#starting > 0) return;
    if (Atomics.load(this.#controlInts, Control.IDLE) > 0) return;
    const more = Math.min(this.#workers.size, this.#maxWorkers - this.#workers.size);
    for (let i = 0; i < more; i++) this.#spawn();
  }

  /** Accepts and closes waiting connections while every Worker is busy at the bound. */
  #refuseWhenSaturated(): void {
    if (this.#workers.size < this.#maxWorkers) return;
    if (Atomics.load(this.#controlInts, Control.IDLE) > 0) return;
    const c = libc();
    for (const socket of this.#sockets) {
      for (;;) {
        const fd = c.accept4(socket.fd, null, null, Sys.SOCK_CLOEXEC);
        if (fd < 0) break; // none waiting, or out of descriptors: the next check tries again
        c.close(fd);
        this.#logger("warn", `nbd: refused a connection: all ${this.#maxWorkers} Workers are busy`);
      }
    }
  }
}

/** One Worker as the owner keeps it: the Worker, its slot, its export handles. */
class PlaneWorker {
  readonly slot = newSlot();
  /** The Worker's write preparations in flight (prepare_queue.ts). */
  readonly prepares = newPrepareQueue();
  /** Signalled after every message, so that a Worker blocked in poll() turns its event loop. */
  readonly messageFd: number = libc().eventfd(0, Sys.EFD_NONBLOCK | Sys.EFD_CLOEXEC);
  readonly #endedListeners: (() => void)[] = [];
  readonly #worker: Worker;
  readonly #provider: ExportProvider;
  readonly #logger: NbdLogger;
  readonly #stats: NbdStats;
  readonly #handles = new Map<number, NbdExport>();
  readonly #exited: Promise<void>;
  #nextHandle = 1;
  #stopped = false;
  #answering = false;
  #scratch = new Uint8Array(0);

  constructor(
    provider: ExportProvider,
    options: {
      logger: NbdLogger;
      stats: NbdStats;
      onBusy: () => void;
      onReady: () => void;
      onExit: (failure: string | undefined) => void;
    },
  ) {
    this.#provider = provider;
    this.#logger = options.logger;
    this.#stats = options.stats;
    this.#worker = new Worker(WORKER_MODULE_URL.href, {
      type: "module",
    });
    this.#exited = new Promise<string | undefined>((resolve) => {
      this.#worker.onmessage = (event: MessageEvent<WorkerMessage>) => {
        if (event.data.type === "busy") options.onBusy();
        if (event.data.type === "ready") options.onReady();
        if (event.data.type === "exited") resolve(undefined);
      };
      this.#worker.onerror = (event) => {
        event.preventDefault();
        this.#logger("error", `nbd: a Worker failed: ${event.message}`);
        this.#worker.terminate();
        resolve(event.message);
      };
    }).then((failure) => {
      this.#stopped = true;
      wakeSlot(this.slot);
      wakePrepareQueue(this.prepares);
      options.onExit(failure);
    });
  }

  start(init: WorkerInit): void {
    this.#worker.postMessage(init);
    const answer = async (request: SlotRequest, data: Uint8Array) => {
      this.#answering = true;
      try {
        return await this.#answer(request, data);
      } finally {
        this.#answering = false;
      }
    };
    void serveSlot(this.slot, answer, () => this.#stopped)
      .catch((error) => this.#logger("error", `nbd: a Worker's slot failed: ${error}`));
    const one = new Uint8Array(new BigUint64Array([1n]).buffer);
    void servePrepareQueue(
      this.prepares,
      (handle, offset, length) => this.#prepareWrite(handle, offset, length),
      () => {
        if (!this.#stopped) libc().write(this.messageFd, one, 8n);
      },
      () => this.#stopped,
    ).catch((error) => this.#logger("error", `nbd: a Worker's prepare queue failed: ${error}`));
  }

  /**
   * Waits for the Worker to finish its connection and exit, terminating it
   * after 5 s, but never while the owner works on its request or the
   * Worker has preparations in flight: a Worker holds a write gate across
   * each (prepare_queue.ts), and must get the answer and leave the gate, or
   * the next freeze would wait for it forever.
   */
  async stop(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => timer = setTimeout(resolve, EXIT_WAIT_MS));
    await Promise.race([this.#exited, late]);
    clearTimeout(timer);
    // An exited Worker (stopped) holds nothing; a live one may wait for its preparations.
    while (this.#answering || (!this.#stopped && preparesInFlight(this.prepares))) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    this.#stopped = true;
    wakeSlot(this.slot);
    wakePrepareQueue(this.prepares);
    this.#worker.terminate();
    this.#forgetEnded();
    libc().close(this.messageFd);
  }

  /** Posts `message` and wakes the Worker's poll. */
  #post(message: WorkerMessage): void {
    if (this.#stopped) return;
    this.#worker.postMessage(message);
    libc().write(this.messageFd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
  }

  /** Tells the Worker when `exp` (under `handle`) ends. */
  #watchEnded(handle: number, exp: NbdExport): void {
    const ended = exp.ended;
    if (ended === undefined) return;
    const tell = () => this.#post({ type: "ended", handle });
    if (ended.aborted) return tell();
    ended.addEventListener("abort", tell, { once: true });
    this.#endedListeners.push(() => ended.removeEventListener("abort", tell));
  }

  #forgetEnded(): void {
    for (const remove of this.#endedListeners.splice(0)) remove();
  }

  #export(handle: number): NbdExport {
    const exp = this.#handles.get(handle);
    if (exp === undefined) throw new ServiceError("INTERNAL", `No export under handle ${handle}`);
    return exp;
  }

  #buffer(length: number): Uint8Array {
    if (this.#scratch.length < length) this.#scratch = new Uint8Array(length);
    return this.#scratch.subarray(0, length);
  }

  async #answer(
    request: SlotRequest,
    data: Uint8Array,
  ): Promise<number | { json: unknown } | void> {
    const { op, handle, offset, length, flags } = request;
    switch (op) {
      case Op.LOG: {
        const { level, message } = JSON.parse(decoder.decode(request.data)) as {
          level: NbdLogLevel;
          message: string;
        };
        this.#logger(level, message);
        return;
      }
      case Op.LIST:
        return { json: this.#provider.list().map((exp) => describeExport(exp, -1)) };
      case Op.GET: {
        const exp = this.#provider.get(JSON.parse(decoder.decode(request.data)) as string);
        if (exp === undefined) return { json: null };
        const id = this.#nextHandle++;
        this.#handles.set(id, exp);
        const info = describeExport(exp, id);
        if (info.fast) this.#postView(id, exp);
        this.#watchEnded(id, exp);
        return { json: info };
      }
      case Op.DEFAULT_NAME:
        return { json: this.#provider.defaultName ?? null };
      case Op.RELEASE:
        this.#handles.clear();
        this.#forgetEnded();
        return;
      case Op.COUNT:
        if (flags === 1) this.#stats.opened();
        else this.#stats.closed();
        return;
      case Op.VIEW:
        this.#postView(handle, this.#export(handle));
        return;
    }
    const exp = this.#export(handle);
    switch (op) {
      case Op.META_CONTEXTS:
        return { json: exp.metaContexts?.() ?? [] };
      case Op.READ: {
        const into = this.#buffer(length);
        await exp.read(offset, into);
        data.set(into);
        return length;
      }
      case Op.WRITE: {
        const copy = this.#buffer(request.data.length);
        copy.set(request.data);
        await exp.write(offset, copy, { fua: (flags & DelegatedFlag.FUA) !== 0 });
        return;
      }
      case Op.FLUSH:
        await exp.flush();
        return;
      case Op.TRIM:
        await exp.trim!(offset, length);
        return;
      case Op.WRITE_ZEROES:
        await exp.writeZeroes!(offset, length, {
          fua: (flags & DelegatedFlag.FUA) !== 0,
          noHole: (flags & DelegatedFlag.NO_HOLE) !== 0,
          fastZero: (flags & DelegatedFlag.FAST_ZERO) !== 0,
        });
        return;
      case Op.BLOCK_STATUS: {
        const extents = await exp.blockStatus!(decoder.decode(request.data), offset, length);
        return { json: extents.slice(0, MAX_EXTENTS) };
      }
      case Op.PREPARE_WRITE:
        await this.#prepareWrite(handle, offset, length);
        return;
    }
    throw new ServiceError("INTERNAL", `Unknown Worker request ${op}`);
  }

  /** Prepares a Worker's WRITE of `length` bytes at `offset` of `handle`'s export (slot or queue). */
  #prepareWrite(handle: number, offset: number, length: number): Promise<void> {
    return fastPathOf(this.#export(handle))!.prepareWrite(offset, length);
  }

  /** Sends the export's current view (once its gate is open) to the Worker. */
  #postView(handle: number, exp: NbdExport): void {
    fastPathOf(exp)!.view().then(
      (view) => {
        this.#post({ type: "view", handle, view });
      },
      (error) => this.#logger("error", `nbd: cannot make a Worker view: ${error}`),
    );
  }
}

const decoder = new TextDecoder();
