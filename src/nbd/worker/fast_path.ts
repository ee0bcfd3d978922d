/**
 * What lets a Worker serve an export's READ, WRITE and FLUSH itself, on its
 * own descriptor of the export's file (a tracked device), or READ alone (a
 * read-only snapshot image, {@link ImageView}), instead of asking the owner
 * for each request. An export offers it with {@link offerFastPath}; without one,
 * every request of the export is delegated to the owner (correct, slower).
 *
 * The view is shared memory the owner keeps current: a write gate (Int32
 * FROZEN, IN_FLIGHT, FREEZES, as src/engine/tracker.ts WriteGate), an
 * optional mark table (one byte per block raised to the active number in an
 * Int32 header slot; skipped while the header's corrupted slot is set), and
 * an optional prepare table (one state byte per chunk: 0 means the owner
 * must prepare the range before it is written). The view is valid while the
 * gate's FREEZES equals its `epoch`: everything in it changes only while the
 * gate is frozen, so a Worker inside the gate with a current epoch may use
 * it; otherwise it delegates and asks for a new view.
 *
 * @module
 */

import type { NbdExport } from "../export.ts";

/** What an opened file must be: st_rdev of a block device, or st_dev and st_ino of a file. */
export interface FileIdentityView {
  /** True for a block device. */
  block: boolean;
  /** st_rdev of a block device, st_dev of a file. */
  device: number;
  /** st_ino of a file. */
  inode: number;
}

/**
 * A read-only snapshot image a Worker reads itself: chunks still NEW from
 * the original (the view's file), STORED ones from the difference storage.
 * See src/userspace/image_fast_path.ts for the rules.
 */
export interface ImageView {
  /** The difference storage's file. */
  storagePath: string;
  /** What it must be. */
  storageIdentity: FileIdentityView;
  /** The chunk table (Float64 storage offsets first, then one state byte per chunk). */
  table: SharedArrayBuffer;
  /** Byte offset of the state bytes. */
  statesOffset: number;
  /** Number of chunks. */
  count: number;
  /** Power of 2 of a chunk. */
  shift: number;
  /** The image's size in bytes. */
  sizeBytes: number;
  /** The difference area's control (Int32 CORRUPTED, STOPPING, IMAGE_IO: engine AreaControl). */
  control: SharedArrayBuffer;
}

/** An export's shared state as a Worker uses it (sent by postMessage). */
export interface FastPathView {
  /** The gate's FREEZES when the view was made. */
  epoch: number;
  /** The file to open. */
  path: string;
  /** What the opened file must be. */
  identity: FileIdentityView;
  /** Set for a snapshot image: the view's file is its original, and writes are never fast. */
  image?: ImageView;
  /** The write gate (Int32 FROZEN, IN_FLIGHT, FREEZES). */
  gate: SharedArrayBuffer;
  /** The mark table, if writes mark one. */
  marks?: {
    /** Int32 header (active number at `activeSlot`, corrupted flag at `corruptedSlot`), then tables. */
    buffer: SharedArrayBuffer;
    /** Int32 index of the active number. */
    activeSlot: number;
    /** Int32 index of the corrupted flag. */
    corruptedSlot: number;
    /** Byte offset of the table marked by writes. */
    tableOffset: number;
    /** Entries of the table. */
    blockCount: number;
    /** Power of 2 of a block. */
    blockShift: number;
    /** True when a Worker may raise entries itself; false: raising is a prepare (persistence). */
    local: boolean;
  };
  /** The prepare table, if one applies now. */
  prepare?: {
    /** Its memory. */
    buffer: SharedArrayBuffer;
    /** Byte offset of the state bytes. */
    statesOffset: number;
    /** Number of chunks. */
    count: number;
    /** Power of 2 of a chunk. */
    shift: number;
  };
}

/** What the owner runs for an export's fast path. */
export interface FastPath {
  /** The current view, once the gate is open; undefined when the fast path is off now. */
  view(): Promise<FastPathView | undefined>;
  /**
   * Makes a write of `length` bytes at `offset` safe to do elsewhere: marks,
   * makes marks durable, copies what must be copied first. Called while the
   * Worker holds the gate.
   */
  prepareWrite(offset: number, length: number): Promise<void>;
}

const offered = new WeakMap<NbdExport, FastPath>();

/** Lets Workers serve `exp`'s data requests through `fastPath`. */
export function offerFastPath(exp: NbdExport, fastPath: FastPath): void {
  offered.set(exp, fastPath);
}

/** The fast path `exp` offers, if any. */
export function fastPathOf(exp: NbdExport): FastPath | undefined {
  return offered.get(exp);
}
