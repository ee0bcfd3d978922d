/**
 * A {@link ByteStream} over a connected socket descriptor, for the NBD code
 * running in a Worker: recv and send through FFI, blocking the Worker (and
 * only it) in poll() when the socket has nothing to give or take.
 *
 * Design note: the protocol code is promise-based and queues replies in
 * microtasks (reply_writer.ts), while a blocking call stops the whole
 * thread. So every read first lets a few microtasks run (the replies ready
 * by then leave), and a read that finds the socket empty turns the event loop
 * once (setImmediate, about 2 µs): every microtask runs first, which sends
 * the replies of the requests already served, and messages from the owner
 * (new views) are delivered. Only then does it block, in poll() on the
 * socket and the plane's wake descriptor (an eventfd the owner signals at
 * close), in slices of at most a second, so that deadlines hold: the
 * handshake deadline (a client that has not chosen an export in time is
 * dropped), and the idle rule (a connection with no request for
 * `idleTimeoutMs` is dropped while every Worker is busy and the pool cannot
 * grow). A send that cannot go on for `idleTimeoutMs` (a client that stopped
 * reading its replies) fails the connection too. It busy-polls
 * (spin_budget.ts) only for a new request, never for the rest of one the
 * client is still sending (measured, nbdcopy writes: 2.28 GiB/s against
 * 2.18-2.26 spinning for both, 2.39 never spinning). While an export waits
 * for a view (`wantsTurn`), the slices are 1 ms: requests waiting for it
 * wait on a timer and the owner's message, which only an event-loop turn
 * delivers.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { ServiceError } from "../../errors.ts";
import type { ByteStream } from "../socket_reader.ts";
import { Errno, errno, type Libc, libc, Sys, sysError } from "./libc.ts";
import { SpinBudget } from "./spin_budget.ts";
import { Control } from "./worker_protocol.ts";

const SLICE_MS = 1000;
/** While a view is awaited, poll() blocks at most this long between event-loop turns. */
const TURN_SLICE_MS = 1;
/** SPLICE_F_MOVE | SPLICE_F_NONBLOCK (the pipe side never waits). */
const SPLICE_FLAGS = 1 | 2;

/** How a {@link BlockingStream} waits. */
export interface BlockingStreamOptions {
  /** The plane's wake descriptor: readable once the server is closing. */
  wakeFd: number;
  /** The Worker's message eventfd: readable when the owner posted a message (read to clear). */
  messageFd: number;
  /** Connections idle this long are dropped while {@link BlockingStreamOptions.saturated}. */
  idleTimeoutMs: number;
  /** True while no Worker is free and the pool is at its bound. */
  saturated: () => boolean;
  /** True while the Worker waits for a message from the owner: turn the event loop before reading. */
  wantsTurn?: () => boolean;
  /**
   * The plane's control block: busy-polling only while fewer than its
   * MAX_SPINNERS Workers do (SPINNERS counts them). Spinning Workers beyond
   * the cores' half take the CPU their clients and the busy Workers need
   * (measured, nbdcopy writes over four connections on 2 cores, three
   * interleaved rounds: 2.13-2.25 GiB/s with one spinner at a time, against
   * 2.01-2.17 with all four). Without it, no bound.
   */
  control?: Int32Array;
  /**
   * Settles what the owner finished for this Worker (prepare_queue.ts):
   * called before each read, so also after each wake.
   */
  collect?: () => void;
  /**
   * Whether READ data may be spliced from the page cache to the socket
   * ({@link BlockingStream.spliceFrom}; default true). A peer on this host
   * should not: its receive then copies out of cold page-cache pages, which
   * costs it more than the sender's copy saves (measured in peer.ts).
   */
  splice?: boolean;
}

/** One event-loop turn. */
export function turnEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A socket descriptor as a byte stream. */
export class BlockingStream implements ByteStream {
  readonly #fd: number;
  readonly #libc: Libc = libc();
  readonly #options: BlockingStreamOptions;
  readonly #pollFds = new Int32Array(6);
  readonly #counter = new Uint8Array(8);
  readonly #pollBytes = new Uint8Array(this.#pollFds.buffer);
  #lastActiveMs = Date.now();
  #closed = false;
  #spliceRefused = false;
  readonly #spinBudget = new SpinBudget();
  /** Reads fail with TIMEOUT after this time (ms since the epoch); undefined: no deadline. */
  deadlineMs: number | undefined;
  /** Once the socket has nothing to read after this time, the stream ends (an export that ended). */
  endAtMs: number | undefined;

  /** A stream over the connected socket `fd` (owned by the caller, who closes it). */
  constructor(fd: number, options: BlockingStreamOptions) {
    this.#fd = fd;
    this.#options = options;
    if (options.splice !== false) this.spliceFrom = (fd, length) => this.#spliceFrom(fd, length);
  }

  async read(into: Uint8Array, midMessage = false): Promise<number | null> {
    for (;;) {
      if (this.#closed) return null;
      this.#options.collect?.();
      if (this.#options.wantsTurn?.()) await turnEventLoop();
      // A few microtask turns first: replies of the requests just served leave before this
      // recv, so the client refills its queue while the Worker serves the rest (measured: at
      // QD16, fewer stalls than replying only once the socket is empty).
      for (let i = 0; i < 4; i++) await null;
      const n = Number(this.#libc.recv(this.#fd, into, BigInt(into.length), Sys.MSG_DONTWAIT));
      if (n > 0) {
        this.#lastActiveMs = Date.now();
        return n;
      }
      if (n === 0) return null;
      const code = errno();
      if (code === Errno.EINTR) continue;
      if (code !== Errno.EAGAIN) throw sysError("recv", code);
      // Every microtask runs first (the replies of the requests served leave), then spin.
      await turnEventLoop();
      // The rest of a message is on its way: the sender needs the CPU more than a spin would.
      const spun = midMessage ? undefined : this.#spin(into);
      if (spun !== undefined) return spun;
      const sleptFrom = performance.now();
      const outcome = this.#waitReadable();
      this.#spinBudget.slept((performance.now() - sleptFrom) * 1000);
      if (outcome === "message") {
        this.#libc.read(this.#options.messageFd, this.#counter, 8n);
        await turnEventLoop();
        continue;
      }
      if (outcome === "end") return null;
      // "turn": loop, and turn the event loop at the top.
    }
  }

  /**
   * Tries recv for up to the spin budget (spin_budget.ts): the count (null
   * at the end of the stream) if data came, undefined if the Worker should
   * sleep in poll.
   */
  #spin(into: Uint8Array): number | null | undefined {
    const budget = this.#spinBudget.us;
    if (budget === 0) return undefined;
    const control = this.#options.control;
    if (control !== undefined) {
      if (
        Atomics.add(control, Control.SPINNERS, 1) >= Atomics.load(control, Control.MAX_SPINNERS)
      ) {
        Atomics.sub(control, Control.SPINNERS, 1);
        return undefined;
      }
    }
    try {
      const until = performance.now() + budget / 1000;
      while (performance.now() < until) {
        const n = Number(this.#libc.recv(this.#fd, into, BigInt(into.length), Sys.MSG_DONTWAIT));
        if (n < 0) continue;
        this.#spinBudget.spun(true);
        if (n === 0) return null;
        this.#lastActiveMs = Date.now();
        return n;
      }
      this.#spinBudget.spun(false);
      return undefined;
    } finally {
      if (control !== undefined) Atomics.sub(control, Control.SPINNERS, 1);
    }
  }

  write(data: Uint8Array, more = false): Promise<number> {
    const flags = Sys.MSG_DONTWAIT | Sys.MSG_NOSIGNAL | (more ? Sys.MSG_MORE : 0);
    return this.#sendWith(
      "send",
      () => Number(this.#libc.send(this.#fd, data, BigInt(data.length), flags)),
    );
  }

  /**
   * Splices up to `length` bytes from the pipe `fd` to the socket (which the
   * Worker made non-blocking, so the splice never waits on the socket; a
   * full socket waits in poll as a send does). A socket that cannot take
   * spliced pages (EINVAL) gets them read from the pipe and sent instead.
   * Undefined when the options say not to splice.
   */
  readonly spliceFrom?: (fd: number, length: number) => Promise<number>;

  #spliceFrom(fd: number, length: number): Promise<number> {
    if (this.#spliceRefused) return this.#sendFromPipe(fd, length);
    return this.#sendWith(
      "splice",
      () => Number(this.#libc.splice(fd, null, this.#fd, null, BigInt(length), SPLICE_FLAGS)),
    ).catch((error) => {
      if ((error as { errno?: number }).errno !== Errno.EINVAL) throw error;
      this.#spliceRefused = true;
      return this.#sendFromPipe(fd, length);
    });
  }

  /** Reads up to `length` bytes out of the pipe `fd` and sends them. */
  async #sendFromPipe(fd: number, length: number): Promise<number> {
    const bytes = new Uint8Array(Math.min(length, 256 * 1024));
    const n = Number(this.#libc.read(fd, bytes, BigInt(bytes.length)));
    if (n <= 0) throw sysError("read", n === 0 ? Errno.EIO : errno());
    for (let done = 0; done < n;) done += await this.write(bytes.subarray(done, n));
    return n;
  }

  /**
   * Calls `once` (a non-blocking send or splice: count, or -1 with errno)
   * until it moves something, waiting in poll while the socket is full; a
   * client that takes nothing for `idleTimeoutMs` fails the send with TIMEOUT.
   */
  #sendWith(call: string, once: () => number): Promise<number> {
    for (;;) {
      if (this.#closed) return Promise.reject(new Deno.errors.BadResource("stream closed"));
      const n = once();
      if (n >= 0) return Promise.resolve(n);
      const code = errno();
      if (code === Errno.EINTR) continue;
      if (code !== Errno.EAGAIN) return Promise.reject(sysError(call, code));
      const since = Date.now();
      while (this.#poll(Sys.POLLOUT, SLICE_MS, false) === "timeout") {
        if (Date.now() - since >= this.#options.idleTimeoutMs) {
          return Promise.reject(
            new ServiceError("TIMEOUT", "Cannot send a reply: the client stopped reading"),
          );
        }
      }
    }
  }

  close(): void {
    this.#closed = true;
  }

  /**
   * Blocks until the socket is readable ("ready"), the owner posted a
   * message, the event loop must turn (after TURN_SLICE_MS while
   * `wantsTurn`), or the stream should end (closing, an ended export's
   * grace over); TIMEOUT past the handshake deadline or the idle rule.
   */
  #waitReadable(): "ready" | "message" | "turn" | "end" {
    for (;;) {
      const now = Date.now();
      let slice = SLICE_MS;
      if (this.endAtMs !== undefined) {
        if (now >= this.endAtMs) return "end";
        slice = Math.min(slice, this.endAtMs - now);
      }
      if (this.deadlineMs !== undefined) {
        if (now >= this.deadlineMs) {
          throw new ServiceError("TIMEOUT", "no export chosen in time");
        }
        slice = Math.min(slice, this.deadlineMs - now);
      }
      const idleMs = now - this.#lastActiveMs;
      if (idleMs >= this.#options.idleTimeoutMs && this.#options.saturated()) {
        throw new ServiceError(
          "TIMEOUT",
          `idle for ${Math.round(idleMs / 1000)} s while every Worker is busy`,
        );
      }
      const turning = this.#options.wantsTurn?.() === true;
      if (turning) slice = Math.min(slice, TURN_SLICE_MS);
      const outcome = this.#poll(Sys.POLLIN, slice);
      if (outcome === "wake") return "end";
      if (outcome === "timeout" && turning) return "turn";
      if (outcome !== "timeout") return outcome;
    }
  }

  /**
   * poll() on the socket (and, if `watchWake`, the wake and message
   * descriptors) for up to `timeoutMs`.
   */
  #poll(
    events: number,
    timeoutMs: number,
    watchWake = true,
  ): "ready" | "wake" | "message" | "timeout" {
    const fds = this.#pollFds;
    fds[0] = this.#fd;
    fds[1] = events;
    fds[2] = this.#options.wakeFd;
    fds[3] = Sys.POLLIN;
    fds[4] = this.#options.messageFd;
    fds[5] = Sys.POLLIN;
    for (;;) {
      const n = this.#libc.poll(this.#pollBytes, watchWake ? 3n : 1n, Math.max(0, timeoutMs));
      if (n < 0) {
        const code = errno();
        if (code === Errno.EINTR) continue;
        throw sysError("poll", code);
      }
      if (n === 0) return "timeout";
      // Data already sent is served first: close() answers what clients sent before it.
      if ((fds[1] >>> 16) !== 0) return "ready";
      if ((fds[3] >>> 16) !== 0) return "wake";
      return "message";
    }
  }
}
