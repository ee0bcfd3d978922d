/**
 * What the owner and the plane's Workers tell each other by message, and
 * the Int32 slots of the plane's shared control block.
 *
 * @module
 */

import type { FastPathView } from "./fast_path.ts";

/** Int32 slots of the control block (one per plane). */
export const Control = {
  /** Workers started and not exited. */
  WORKERS: 0,
  /** Workers waiting for a connection. */
  IDLE: 1,
  /** The pool's bound. */
  MAX_WORKERS: 2,
  /** Workers busy-polling their socket now (blocking_stream.ts). */
  SPINNERS: 3,
  /** The most Workers that may busy-poll at once: one per two cores, at least one. */
  MAX_SPINNERS: 4,
} as const;

/** Bytes of the control block. */
export const CONTROL_BYTES = 32;

/** The owner's first message to a Worker. */
export interface WorkerInit {
  /** Message kind. */
  type: "init";
  /** The Worker's request slot (owner_slot.ts). */
  slot: SharedArrayBuffer;
  /** The Worker's write preparations (prepare_queue.ts). */
  prepares: SharedArrayBuffer;
  /** The plane's control block ({@link Control}). */
  control: SharedArrayBuffer;
  /** The Worker's request counters (NbdStats memory). */
  stats: SharedArrayBuffer;
  /** The plane's read probes (ReadProbeBoard memory), when it has any. */
  readProbes?: SharedArrayBuffer;
  /** Listening descriptors to accept on. */
  listenFds: number[];
  /** Readable once the server closes. */
  wakeFd: number;
  /** This Worker's eventfd: the owner signals it after each message, to wake a blocked poll. */
  messageFd: number;
  /** A connection to an export that ended is closed this many ms later. */
  endedGraceMs: number;
  /** A client must choose an export within this many ms. */
  handshakeTimeoutMs: number;
  /** A connection idle this long is dropped while the pool is saturated. */
  idleTimeoutMs: number;
}

/** Messages after the first. */
export type WorkerMessage =
  /** Owner to Worker: the current view of an export handle (undefined: no fast path). */
  | { type: "view"; handle: number; view: FastPathView | undefined }
  /** Owner to Worker: the export of a handle ended (a destroyed image). */
  | { type: "ended"; handle: number }
  /** Worker to owner: it started and waits for connections. */
  | { type: "ready" }
  /** Worker to owner: it took a connection and no Worker is left waiting. */
  | { type: "busy" }
  /** Worker to owner: it stopped (the server is closing). */
  | { type: "exited" };
