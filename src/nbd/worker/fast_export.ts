/**
 * A Worker's export with a fast path (fast_path.ts): READ, WRITE and FLUSH
 * on the Worker's own descriptor of the export's file (a snapshot image:
 * READ alone, through image_reader.ts), everything else and every request
 * made while the view is missing or stale delegated to the owner
 * (delegated_export.ts).
 *
 * A WRITE (DATA-PLANE.md "A worker's WRITE"): enter the gate (while frozen,
 * Atomics.wait; add one to in flight, re-check frozen); check that the view
 * is current (FREEZES equals its epoch: tables change only while frozen, and
 * cannot while this write holds the gate); raise the mark table's entries to
 * the active number, unless the map is corrupted or raising needs the owner
 * (persistence: the write-intent record must be durable first); if a block
 * needed the owner, lies past the table, or a chunk in range is NEW, ask the
 * owner to prepare the range (mark, make durable, copy-on-write) through the
 * prepare queue (prepare_queue.ts) and go on serving other requests until it
 * is done, holding the gate; pwrite, one Worker at a time per device
 * (writer_lock.ts); leave the gate (notify at 0). A write finding the gate
 * frozen while this Worker's own writes hold it waits on a timer, not in
 * Atomics.wait: those writes end on this thread. A stale view
 * makes the request delegated and asks the owner for a new view, which
 * arrives by message at the Worker's next event-loop turn (blocking_stream.ts
 * turns it when asked).
 *
 * @module
 */

import { ServiceError } from "../../errors.ts";
import type { NbdExport, PipedData } from "../export.ts";
import type { FastPathView, FileIdentityView } from "./fast_path.ts";
import { ImageReader } from "./image_reader.ts";
import { cString, Errno, errno, fileIdentity, type Libc, libc, Sys } from "./libc.ts";
import { Op, type SlotClient } from "./owner_slot.ts";
import type { PrepareClient } from "./prepare_queue.ts";
import type { ReadPipes } from "./read_pipes.ts";
import { lockWriter, unlockWriter } from "./writer_lock.ts";

const FROZEN = 0;
const IN_FLIGHT = 1;
const FREEZES = 2;
const GATE_WAIT_MS = 100;
const VIEW_WAIT_MS = 50;
const GATE_RETRY_MS = 1;

/** Counts fast exports waiting for a view, so the stream knows to turn the event loop. */
let viewsAwaited = 0;
/** Counts writes waiting for a frozen gate on a timer (#gateOpened). */
let gatesAwaited = 0;

/**
 * True while some export of this Worker waits for a view message or some
 * write for a frozen gate: the stream should turn the event loop often.
 */
export function wantsTurn(): boolean {
  return viewsAwaited > 0 || gatesAwaited > 0;
}

/** Leaves `gate` (one write fewer in flight; notifies at 0). */
function leave(gate: Int32Array<ArrayBufferLike>): void {
  if (Atomics.sub(gate, IN_FLIGHT, 1) === 1) Atomics.notify(gate, IN_FLIGHT);
}

/** The fast path of one export on one connection. */
export class FastExport {
  readonly #slot: SlotClient;
  readonly #handle: number;
  readonly #delegated: NbdExport;
  readonly #libc: Libc = libc();
  readonly #pipes: ReadPipes;
  readonly #prepares: PrepareClient;
  #view: FastPathView | undefined;
  #fd = -1;
  #storageFd = -1;
  #image: ImageReader | undefined;
  #gate: Int32Array<ArrayBufferLike> = new Int32Array(4);
  #header: Int32Array<ArrayBufferLike> | undefined;
  #marks: Uint8Array<ArrayBufferLike> | undefined;
  #states: Uint8Array<ArrayBufferLike> | undefined;
  #awaiting = false;
  /** The wait for an awaited view that requests share (#arrived). */
  #arrival: Promise<boolean> | undefined;
  #viewArrived: (() => void) | undefined;
  #off = false;

  /**
   * The fast path of handle `handle`, falling back on `delegated`; zero-copy
   * READs through the Worker's `pipes`, preparations through its `prepares`.
   */
  constructor(
    slot: SlotClient,
    handle: number,
    delegated: NbdExport,
    worker: { pipes: ReadPipes; prepares: PrepareClient },
  ) {
    this.#slot = slot;
    this.#handle = handle;
    this.#delegated = delegated;
    this.#pipes = worker.pipes;
    this.#prepares = worker.prepares;
    this.#await();
  }

  /** The export the transmission phase serves. */
  export(): NbdExport {
    return {
      ...this.#delegated,
      read: (offset, into) => this.#read(offset, into),
      readPiped: (offset, length) => this.#readPiped(offset, length),
      write: (offset, data, options) => this.#write(offset, data, options.fua),
      flush: () => this.#flush(),
    };
  }

  /** Installs a view from the owner; undefined turns the fast path off for good. */
  setView(view: FastPathView | undefined): void {
    this.#stopAwaiting();
    if (view === undefined) {
      this.#off = true;
      this.close();
      return;
    }
    const reopen = this.#view?.path !== view.path ||
      this.#view?.image?.storagePath !== view.image?.storagePath;
    if (reopen && !this.#open(view)) return;
    this.#view = view;
    this.#image = view.image && new ImageReader(view.image, this.#fd, this.#storageFd);
    this.#gate = new Int32Array(view.gate);
    const marks = view.marks;
    this.#header = marks && new Int32Array(marks.buffer, 0, 4);
    this.#marks = marks && new Uint8Array(marks.buffer, marks.tableOffset, marks.blockCount);
    const prepare = view.prepare;
    this.#states = prepare && new Uint8Array(prepare.buffer, prepare.statesOffset, prepare.count);
  }

  /** Closes the descriptors. */
  close(): void {
    if (this.#fd >= 0) this.#libc.close(this.#fd);
    if (this.#storageFd >= 0) this.#libc.close(this.#storageFd);
    this.#fd = this.#storageFd = -1;
    this.#view = undefined;
    this.#image = undefined;
    this.#stopAwaiting();
  }

  #stopAwaiting(): void {
    if (!this.#awaiting) return;
    this.#awaiting = false;
    viewsAwaited--;
    this.#viewArrived?.();
  }

  /** Opens the view's file (and an image's storage); false, and the fast path off, if one is not what the view says. */
  #open(view: FastPathView): boolean {
    this.close();
    const image = view.image;
    const mode = image === undefined ? Sys.O_RDWR : Sys.O_RDONLY;
    this.#fd = this.#openChecked(view.path, view.identity, mode);
    if (image !== undefined && this.#fd >= 0) {
      this.#storageFd = this.#openChecked(image.storagePath, image.storageIdentity, mode);
    }
    if (this.#fd < 0 || (image !== undefined && this.#storageFd < 0)) {
      this.close();
      this.#off = true;
      return false;
    }
    return true;
  }

  /** A descriptor of `path` if it is `identity`, else -1. */
  #openChecked(path: string, identity: FileIdentityView, mode: number): number {
    const fd = this.#libc.open(cString(path), mode | Sys.O_CLOEXEC, 0);
    if (fd < 0) return -1;
    const id = fileIdentity(fd);
    const same = id !== undefined &&
      (identity.block
        ? id.block && id.rdev === identity.device
        : !id.block && id.device === identity.device && id.inode === identity.inode);
    if (same) return fd;
    this.#libc.close(fd);
    return -1;
  }

  /** True when the view may be used now; else asks for a new one (once). */
  #current(): boolean {
    if (this.#view !== undefined && Atomics.load(this.#gate, FREEZES) === this.#view.epoch) {
      return true;
    }
    if (!this.#off && !this.#awaiting) {
      this.#await();
      this.#slot.call(Op.VIEW, { handle: this.#handle });
    }
    return false;
  }

  #await(): void {
    this.#awaiting = true;
    this.#arrival = undefined;
    viewsAwaited++;
  }

  /**
   * Requests that find the view awaited wait for it together, up to
   * VIEW_WAIT_MS, rather than going to the owner meanwhile: the owner makes
   * a view at once, but it comes by message, which only an event loop left
   * free receives (requests sent to the owner block the Worker while they
   * wait). True when the view is current then; once that wait is over,
   * requests go to the owner until the view comes.
   */
  #arrived(): Promise<boolean> {
    if (!this.#awaiting) return Promise.resolve(false);
    this.#arrival ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => arrive(), VIEW_WAIT_MS);
      const arrive = () => {
        clearTimeout(timer);
        this.#viewArrived = undefined;
        resolve();
      };
      this.#viewArrived = arrive;
    }).then(() => this.#current());
    return this.#arrival;
  }

  #read(offset: number, into: Uint8Array): Promise<void> {
    if (!this.#current()) {
      return this.#arrived().then((arrived) =>
        arrived ? this.#read(offset, into) : this.#delegated.read(offset, into)
      );
    }
    if (this.#image !== undefined) {
      return this.#image.read(offset, into)
        ? Promise.resolve()
        : this.#delegated.read(offset, into);
    }
    for (let done = 0; done < into.length;) {
      const n = Number(
        this.#libc.pread(
          this.#fd,
          into.subarray(done),
          BigInt(into.length - done),
          BigInt(offset + done),
        ),
      );
      if (n <= 0) return Promise.reject(ioError("read", n === 0 ? "end of file" : errno()));
      done += n;
    }
    return Promise.resolve();
  }

  /** A READ spliced into a pipe; undefined (pread instead) while delegating or when no pipe is free. */
  #readPiped(offset: number, length: number): Promise<PipedData | undefined> {
    if (!this.#current()) {
      return this.#arrived().then((arrived) =>
        arrived ? this.#readPiped(offset, length) : undefined
      );
    }
    if (this.#image !== undefined) return Promise.resolve(undefined);
    try {
      return Promise.resolve(this.#pipes.fill(this.#fd, offset, length));
    } catch (error) {
      const code = (error as { errno?: number }).errno ?? Errno.EIO;
      return Promise.reject(ioError("read", code === Errno.EIO ? "end of file or EIO" : code));
    }
  }

  #write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    const gate = this.#gate;
    if (this.#image !== undefined) return this.#delegated.write(offset, data, { fua });
    if (this.#view === undefined) {
      this.#current();
      return this.#arrived().then((arrived) =>
        arrived ? this.#write(offset, data, fua) : this.#delegated.write(offset, data, { fua })
      );
    }
    if (!this.#enter(gate)) return this.#gateOpened().then(() => this.#write(offset, data, fua));
    let prepared: Promise<boolean> | undefined;
    let current = false;
    try {
      // A stale view is left with the gate: the owner's write waits at the gate itself.
      current = this.#current();
      if (current && this.#needsOwner(offset, data.length)) {
        prepared = this.#prepares.ask(this.#handle, offset, data.length);
        if (prepared === undefined) this.#prepareThroughSlot(offset, data.length);
      }
      if (current && prepared === undefined) this.#writeHere(offset, data, fua);
    } catch (error) {
      leave(gate);
      return Promise.reject(error);
    }
    if (prepared !== undefined) {
      return prepared.then((ok) => {
        try {
          if (!ok) this.#prepareThroughSlot(offset, data.length);
          this.#writeHere(offset, data, fua);
        } finally {
          leave(gate);
        }
      });
    }
    leave(gate);
    return current ? Promise.resolve() : this.#delegated.write(offset, data, { fua });
  }

  /**
   * Has the owner prepare the range and waits for it: when the queue is
   * full, or when its preparation failed (this one throws the owner's error).
   */
  #prepareThroughSlot(offset: number, length: number): void {
    this.#slot.call(Op.PREPARE_WRITE, { handle: this.#handle, offset, length });
  }

  /** The write itself, inside the gate with a current view and the range prepared. */
  #writeHere(offset: number, data: Uint8Array, fua: boolean): void {
    const gate = this.#gate;
    lockWriter(gate);
    try {
      for (let done = 0; done < data.length;) {
        const n = Number(
          this.#libc.pwrite(
            this.#fd,
            data.subarray(done),
            BigInt(data.length - done),
            BigInt(offset + done),
          ),
        );
        if (n <= 0) throw ioError("write", errno());
        done += n;
      }
    } finally {
      unlockWriter(gate);
    }
    if (fua && this.#libc.fdatasync(this.#fd) !== 0) throw ioError("flush", errno());
  }

  /**
   * Enters the gate (counts this write in flight), waiting while it is
   * frozen; false, without waiting, when it is frozen while this Worker's
   * own writes hold it for preparations: those must finish for the freeze
   * to end, and they finish on this thread (wait with #gateOpened).
   */
  #enter(gate: Int32Array<ArrayBufferLike>): boolean {
    for (;;) {
      const frozen = Atomics.load(gate, FROZEN);
      if (frozen > 0) {
        if (this.#prepares.pending > 0) return false;
        Atomics.wait(gate, FROZEN, frozen, GATE_WAIT_MS);
        continue;
      }
      Atomics.add(gate, IN_FLIGHT, 1);
      if (Atomics.load(gate, FROZEN) === 0) return true;
      leave(gate);
    }
  }

  /** A millisecond with the event loop free (the stream turns it while gates are awaited). */
  async #gateOpened(): Promise<void> {
    gatesAwaited++;
    try {
      await new Promise((resolve) => setTimeout(resolve, GATE_RETRY_MS));
    } finally {
      gatesAwaited--;
    }
  }

  /** Marks what this Worker may mark; true when the owner must prepare the range. */
  #needsOwner(offset: number, length: number): boolean {
    const view = this.#view!;
    let owner = false;
    const marks = view.marks;
    if (marks !== undefined && this.#header![marks.corruptedSlot] === 0) {
      const table = this.#marks!;
      const number = this.#header![marks.activeSlot];
      const first = Math.floor(offset / 2 ** marks.blockShift);
      const last = Math.floor((offset + length - 1) / 2 ** marks.blockShift);
      if (last >= marks.blockCount) return true;
      for (let i = first; i <= last; i++) {
        if (table[i] >= number) continue;
        if (!marks.local) return true;
        table[i] = number;
      }
    }
    const states = this.#states;
    if (states !== undefined) {
      const shift = view.prepare!.shift;
      const last = Math.min(Math.floor((offset + length - 1) / 2 ** shift), states.length - 1);
      for (let i = Math.floor(offset / 2 ** shift); i <= last; i++) {
        if (states[i] === 0) {
          owner = true;
          break;
        }
      }
    }
    return owner;
  }

  #flush(): Promise<void> {
    if (!this.#current() || this.#image !== undefined) return this.#delegated.flush();
    if (this.#libc.fdatasync(this.#fd) !== 0) return Promise.reject(ioError("flush", errno()));
    return Promise.resolve();
  }
}

function ioError(action: string, cause: number | string): ServiceError {
  const detail = typeof cause === "number" ? `errno ${cause}` : cause;
  return new ServiceError("IO", `Cannot ${action} the device: ${detail}`);
}
