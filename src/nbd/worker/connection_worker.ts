/**
 * A Worker of the NBD plane (DATA-PLANE.md shape B): it waits in poll() on
 * the owner's listening sockets, accepts one connection, and serves it with
 * the server's own protocol code (handshake.ts, transmission.ts) over a
 * {@link BlockingStream}, then takes the next. Exports come from the owner
 * through the Worker's slot (remote_provider.ts). When it takes a connection
 * and no other Worker is left waiting, it tells the owner, which may add a
 * Worker (worker_server.ts). It ends when the owner's wake descriptor turns
 * readable (the server is closing).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { BufferPool } from "../buffer_pool.ts";
import { negotiate } from "../handshake.ts";
import type { NbdLogger, NbdLogLevel } from "../log.ts";
import { ReplyWriter } from "../reply_writer.ts";
import { SocketReader } from "../socket_reader.ts";
import { ReadProbeBoard } from "../read_probes.ts";
import { NbdStats } from "../stats.ts";
import { Transmission } from "../transmission.ts";
import { BlockingStream } from "./blocking_stream.ts";
import { wantsTurn } from "./fast_export.ts";
import { Errno, errno, libc, Sys } from "./libc.ts";
import { Op, SlotClient } from "./owner_slot.ts";
import { describePeer } from "./peer.ts";
import { PrepareClient } from "./prepare_queue.ts";
import { RemoteProvider } from "./remote_provider.ts";
import { Control, type WorkerInit, type WorkerMessage } from "./worker_protocol.ts";

const ECONNABORTED = 103;
const ACCEPT_RETRY_MIN_MS = 10;
const ACCEPT_RETRY_MAX_MS = 1000;
const LINGER_MS = 200;

let provider: RemoteProvider | undefined;
let announced = false;

self.onmessage = (event: MessageEvent<WorkerInit | WorkerMessage>) => {
  const message = event.data;
  if (message.type === "init") void run(message);
  else if (message.type === "view") provider?.receiveView(message.handle, message.view);
  else if (message.type === "ended") provider?.receiveEnded(message.handle);
};

async function run(init: WorkerInit): Promise<void> {
  const slot = new SlotClient(init.slot);
  const control = new Int32Array(init.control);
  const logger: NbdLogger = (level: NbdLogLevel, message: string) => {
    try {
      slot.callJson(Op.LOG, { body: { level, message } });
    } catch {
      // a failing log sink must not break a connection
    }
  };
  const stats = new NbdStats(init.stats);
  const prepares = new PrepareClient(init.prepares);
  provider = new RemoteProvider(slot, prepares);
  const saturated = () =>
    Atomics.load(control, Control.IDLE) === 0 &&
    Atomics.load(control, Control.WORKERS) >= Atomics.load(control, Control.MAX_WORKERS);
  for (;;) {
    const accepted = acceptNext(init, { control, logger });
    if (accepted === undefined) break;
    const stream = new BlockingStream(accepted.fd, {
      wakeFd: init.wakeFd,
      messageFd: init.messageFd,
      idleTimeoutMs: init.idleTimeoutMs,
      saturated,
      wantsTurn,
      collect: () => prepares.collect(),
      control,
      splice: !accepted.hostLocal,
    });
    slot.call(Op.COUNT, { flags: 1 });
    try {
      await serve(stream, { peer: accepted.peer, logger, stats, init });
    } finally {
      closeGracefully(accepted.fd);
      provider.release();
      slot.call(Op.COUNT, { flags: 0 });
    }
  }
  self.postMessage({ type: "exited" } satisfies WorkerMessage);
  self.close();
}

/** Waits for and accepts a connection; undefined once the server is closing. */
function acceptNext(
  init: WorkerInit,
  context: { control: Int32Array; logger: NbdLogger },
): { fd: number; peer: string; hostLocal: boolean } | undefined {
  const { control, logger } = context;
  const c = libc();
  const count = init.listenFds.length;
  const fds = new Int32Array(2 * (count + 1));
  const bytes = new Uint8Array(fds.buffer);
  const address = new Uint8Array(112);
  const addressLength = new Uint32Array(1);
  let retryMs = 0;
  Atomics.add(control, Control.IDLE, 1);
  if (!announced) {
    announced = true;
    self.postMessage({ type: "ready" } satisfies WorkerMessage);
  }
  for (;;) {
    init.listenFds.forEach((fd, i) => {
      fds[2 * i] = fd;
      fds[2 * i + 1] = Sys.POLLIN;
    });
    fds[2 * count] = init.wakeFd;
    fds[2 * count + 1] = Sys.POLLIN;
    const n = c.poll(bytes, BigInt(count + 1), retryMs > 0 ? retryMs : -1);
    if (n < 0) {
      if (errno() === Errno.EINTR) continue;
      return undefined;
    }
    if ((fds[2 * count + 1] >>> 16) !== 0) return undefined;
    for (let i = 0; i < count; i++) {
      if ((fds[2 * i + 1] >>> 16) === 0) continue;
      addressLength[0] = address.length;
      const fd = c.accept4(
        init.listenFds[i],
        address,
        new Uint8Array(addressLength.buffer),
        Sys.SOCK_CLOEXEC | Sys.SOCK_NONBLOCK,
      );
      if (fd < 0) {
        const code = errno();
        // Another Worker took it, or the client gave up: nothing to wait for.
        if (code === Errno.EAGAIN || code === Errno.EINTR || code === ECONNABORTED) continue;
        // Out of descriptors or memory (EMFILE): back off from 10 ms to 1 s, as the server does.
        if (retryMs === 0) logger("error", `nbd: accept failed, backing off: ${acceptError(code)}`);
        retryMs = Math.min(ACCEPT_RETRY_MAX_MS, Math.max(ACCEPT_RETRY_MIN_MS, retryMs * 2));
        waitFor(init.wakeFd, retryMs);
        continue;
      }
      retryMs = 0;
      if (Atomics.sub(control, Control.IDLE, 1) === 1) {
        self.postMessage({ type: "busy" } satisfies WorkerMessage);
      }
      return { fd, ...describePeer(c, fd, address) };
    }
  }
}

/**
 * Ends a connection as a client expects: FIN first (shutdown of the
 * sending side), then what the client still sends is read and dropped
 * until it closes too, for at most 200 ms, then close. Closing with
 * unread data would reset the connection instead, and the client would
 * see ECONNRESET rather than the server's end.
 */
function closeGracefully(fd: number): void {
  const c = libc();
  c.shutdown(fd, Sys.SHUT_WR);
  const scratch = new Uint8Array(65536);
  const until = Date.now() + LINGER_MS;
  for (let left = LINGER_MS; left > 0; left = until - Date.now()) {
    waitFor(fd, left);
    const n = Number(c.recv(fd, scratch, BigInt(scratch.length), Sys.MSG_DONTWAIT));
    if (n === 0 || (n < 0 && errno() !== Errno.EAGAIN && errno() !== Errno.EINTR)) break;
  }
  c.close(fd);
}

/** Blocks up to `ms` (less if `fd` turns readable). */
function waitFor(fd: number, ms: number): void {
  const fds = new Int32Array([fd, Sys.POLLIN]);
  libc().poll(new Uint8Array(fds.buffer), 1n, ms);
}

function acceptError(code: number): string {
  const names: Record<number, string> = {
    12: "Cannot allocate memory",
    23: "Too many open files in system",
    24: "Too many open files",
    105: "No buffer space available",
  };
  return `errno ${code}${names[code] ? ` (${names[code]})` : ""}`;
}

async function serve(
  stream: BlockingStream,
  context: { peer: string; logger: NbdLogger; stats: NbdStats; init: WorkerInit },
): Promise<void> {
  const { peer, logger, stats } = context;
  const pool = new BufferPool();
  const reader = new SocketReader(stream);
  const writer = new ReplyWriter(stream, { pool });
  logger("debug", `nbd: connection from ${peer}`);
  stream.deadlineMs = Date.now() + context.init.handshakeTimeoutMs;
  let handshaking = true;
  try {
    const session = await negotiate(reader, writer, { provider: provider!, logger });
    handshaking = false;
    stream.deadlineMs = undefined;
    if (session === undefined) return;
    logger("debug", `nbd: ${peer} chose export "${session.export.name}"`);
    const ended = session.export.ended;
    const endSoon = () => {
      logger(
        "debug",
        `nbd: the export of ${peer} ended; closing in ${context.init.endedGraceMs} ms`,
      );
      stream.endAtMs = Date.now() + context.init.endedGraceMs;
    };
    if (ended?.aborted) endSoon();
    else ended?.addEventListener("abort", endSoon, { once: true });
    try {
      const readProbes = context.init.readProbes
        ? new ReadProbeBoard(context.init.readProbes)
        : undefined;
      await new Transmission(session, { reader, writer, pool }, { logger, stats, readProbes })
        .run();
    } finally {
      ended?.removeEventListener("abort", endSoon);
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (handshaking && message === "no export chosen in time") {
      logger("warn", `nbd: closed ${peer}: no export chosen in time`);
    } else {
      logger("warn", `nbd: closing ${peer}: ${message}`);
    }
  } finally {
    await writer.drained();
    stream.close();
    logger("debug", `nbd: ${peer} disconnected`);
  }
}
