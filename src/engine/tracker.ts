/**
 * The tracker of one attached device: every write to the original goes
 * through it, so it can mark the CBT map and copy chunks before they change.
 *
 * Design note (seed 004_710bd6edcb17dcff.txt, tracker.c tracker_submit_bio
 * and tracker_take_snapshot): a write first marks the CBT write table; when a
 * snapshot is taken and its difference area is not corrupted, it then waits
 * for copy-on-write of the chunks it touches (diff_area_cow); then it goes to
 * the original store. Once the area is corrupted, writes skip copy-on-write
 * and still reach the original. One deliberate difference: the kernel also
 * skips copy-on-write when CBT marking fails (a block beyond the map after a
 * resize); here copy-on-write still runs, so the image stays exact.
 * The freeze gate stands in for blk_mq_freeze_queue: while frozen, new writes
 * wait at the gate, and freezing resolves once writes in flight (including
 * their copy-on-write) are done. Take and destroy freeze every member so
 * that no write lands between the switch of one member and another. The
 * gate is Int32 slots (frozen, in flight, freezes, and the Workers' writer
 * lock) in a SharedArrayBuffer ({@link WriteGate}); only waking the waiters
 * needs lists. Other threads (src/nbd/worker) enter the same gate with
 * Atomics: add one to in flight, then re-check frozen; freezing waits
 * (Atomics.waitAsync) until in flight reads 0, and every freeze bumps
 * FREEZES so that they know to ask for fresh tables.
 * Write intent (md's write-intent bitmap, not in the seed): with a
 * {@link WriteIntent} set, a write waits after marking the CBT until the
 * marks made so far are on stable storage, before its data goes to the
 * original; when nothing is pending (the blocks were marked already) that
 * costs nothing.
 *
 * Hot path: no closure or allocation per request beyond the promise; a
 * corrupted map is checked before marking; copy-on-write is entered only
 * when a chunk in range is still NEW. Writes larger than
 * {@link WRITE_SLICE_BYTES} go to the store in slices with a turn of the
 * event loop between them (setImmediate: about 2 µs, where setTimeout(0)
 * waits a millisecond or more), so that a 32 MiB write (a synchronous pwrite
 * into the page cache) never stalls the API for its whole duration.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { ServiceError } from "../errors.ts";
import type { BlockStore } from "./block_store.ts";
import { CbtMap } from "./cbt_map.ts";
import type { DiffArea } from "./diff_area.ts";
import type { EngineParams } from "./params.ts";
import type { EngineStats } from "./stats.ts";

const ZEROES = new Uint8Array(1 << 20);

/** While freezing, the count of writes in flight is re-read at least this often (ms). */
const FREEZE_POLL_MS = 10;

/** Writes are handed to the store in slices of at most this many bytes, yielding in between. */
export const WRITE_SLICE_BYTES = 4 << 20;

/** Int32 slots of a tracker's write gate. */
export const WriteGate = {
  /** Freezes in progress (take, destroy, detach): new writes wait while it is above 0. */
  FROZEN: 0,
  /** Writes past the gate and not yet done (this thread's and other threads'). */
  IN_FLIGHT: 1,
  /** Counts freezes begun: tables a thread copied before it changed may be stale. */
  FREEZES: 2,
  /** Workers' pwrites to the device, one at a time (src/nbd/worker/writer_lock.ts). */
  WRITER: 3,
} as const;

/** A persistent record of the CBT that writes wait on (see src/userspace/cbt_journal.ts). */
export interface WriteIntent {
  /**
   * Undefined when every mark made so far is on stable storage, else a
   * promise that resolves once it is. Never rejects.
   */
  durable(): Promise<void> | undefined;
}

/** What a tracker knows of the snapshot it belongs to. */
export interface SnapshotMembership {
  /** UUID of the snapshot. */
  readonly id: string;
}

/** Options of a {@link Tracker}. */
export interface TrackerOptions {
  /** Engine parameters (tracking block sizing). */
  params: EngineParams;
  /** Engine counters. */
  stats: EngineStats;
}

/** One turn of the event loop: I/O completions (API sockets) run before this resolves. */
function turnEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** An attached device: its store, its CBT map, and the write path with copy-on-write. */
export class Tracker {
  /** The device's unique name. */
  readonly name: string;
  /** The device's store; owned by the caller, never closed by the engine. */
  readonly store: BlockStore;
  /** The device's change block tracking map. */
  readonly cbt: CbtMap;
  /** The write gate's counters ({@link WriteGate} slots). */
  readonly gate: Int32Array = new Int32Array(new SharedArrayBuffer(16));
  #stats: EngineStats;
  #snapshot: SnapshotMembership | undefined = undefined;
  #diffArea: DiffArea | undefined = undefined;
  #gateWaiters: Array<() => void> = [];
  #drained: Array<() => void> = [];
  #writeIntent: WriteIntent | undefined = undefined;

  /** A tracker for `store` with a fresh CBT map sized for its current capacity. */
  constructor(name: string, store: BlockStore, options: TrackerOptions) {
    this.name = name;
    this.store = store;
    this.#stats = options.stats;
    this.cbt = new CbtMap(store.capacityBytes, options.params);
  }

  /** The device's current capacity in bytes. */
  get capacityBytes(): number {
    return this.store.capacityBytes;
  }

  /** The snapshot the device belongs to, if any. */
  get snapshot(): SnapshotMembership | undefined {
    return this.#snapshot;
  }

  /** The difference area while a snapshot of the device is taken (engine use). */
  get diffArea(): DiffArea | undefined {
    return this.#diffArea;
  }

  #checkRange(action: string, offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 ||
      offset + length > this.store.capacityBytes
    ) {
      throw new ServiceError(
        "OUT_OF_RANGE",
        `Cannot ${action} ${length} bytes at ${offset} on ${this.name}: ` +
          `the device holds ${this.store.capacityBytes} bytes`,
      );
    }
  }

  #ioError(action: string, error: unknown): unknown {
    if (error instanceof ServiceError) return error;
    return new ServiceError("IO", `Cannot ${action} on ${this.name}: ${error}`, { cause: error });
  }

  /** Reads `into.length` bytes of the original from `offset`. OUT_OF_RANGE past the end; IO. */
  async read(offset: number, into: Uint8Array): Promise<void> {
    this.#checkRange("read", offset, into.length);
    try {
      await this.store.read(offset, into);
    } catch (error) {
      throw this.#ioError("read", error);
    }
  }

  /**
   * Writes `data` at `offset`: marks the CBT, copies the chunks it touches
   * when a snapshot is taken, then writes the original. OUT_OF_RANGE past
   * the end; IO when the store fails.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#checkRange("write", offset, data.length);
    if (this.gate[WriteGate.FROZEN] > 0) await this.#waitGate();
    Atomics.add(this.gate, WriteGate.IN_FLIGHT, 1);
    try {
      if (data.length === 0) return;
      const copying = this.#beforeWrite(offset, data.length);
      if (copying !== undefined) await copying;
      try {
        if (data.length <= WRITE_SLICE_BYTES) await this.store.write(offset, data);
        else await this.#writeSliced(offset, data);
      } catch (error) {
        throw this.#ioError("write", error);
      }
      this.#stats.originalWrites += 1;
    } finally {
      this.#leave();
    }
  }

  /** Writes `length` zero bytes at `offset`, with the same semantics as {@link Tracker.write}. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#checkRange("write zeroes to", offset, length);
    if (this.gate[WriteGate.FROZEN] > 0) await this.#waitGate();
    Atomics.add(this.gate, WriteGate.IN_FLIGHT, 1);
    try {
      if (length === 0) return;
      const copying = this.#beforeWrite(offset, length);
      if (copying !== undefined) await copying;
      try {
        for (let done = 0; done < length;) {
          if (done > 0 && done % WRITE_SLICE_BYTES === 0) await turnEventLoop();
          const count = Math.min(ZEROES.length, length - done);
          await this.store.write(offset + done, ZEROES.subarray(0, count));
          done += count;
        }
      } catch (error) {
        throw this.#ioError("write zeroes", error);
      }
      this.#stats.originalWrites += 1;
    } finally {
      this.#leave();
    }
  }

  async #writeSliced(offset: number, data: Uint8Array): Promise<void> {
    for (let done = 0; done < data.length; done += WRITE_SLICE_BYTES) {
      if (done > 0) await turnEventLoop();
      const end = Math.min(done + WRITE_SLICE_BYTES, data.length);
      await this.store.write(offset + done, data.subarray(done, end));
    }
  }

  /** Makes completed writes durable. IO when the store fails. */
  async flush(): Promise<void> {
    try {
      await this.store.flush();
    } catch (error) {
      throw this.#ioError("flush", error);
    }
  }

  /** The record whose durability writes wait for, if any. */
  get writeIntent(): WriteIntent | undefined {
    return this.#writeIntent;
  }

  /** Sets (or with undefined, removes) the record whose durability writes wait for. */
  setWriteIntent(intent: WriteIntent | undefined): void {
    this.#writeIntent = intent;
  }

  /** Resolves once every CBT mark made so far is on stable storage (at once without a record). */
  async marksDurable(): Promise<void> {
    const durable = this.#writeIntent?.durable();
    if (durable) await durable;
  }

  /**
   * Marks the CBT, waits for the marks to be durable (with a write intent)
   * and for copy-on-write of the range (inside the gate, length > 0).
   */
  #beforeWrite(offset: number, length: number): Promise<void> | undefined {
    // A block beyond the map corrupts it; the next take resets it (cbt_map_set).
    if (!this.cbt.isCorrupted) this.cbt.mark(offset, length);
    const durable = this.#writeIntent?.durable();
    if (durable !== undefined) return this.#afterDurable(durable, offset, length);
    return this.#copyBefore(offset, length);
  }

  async #afterDurable(durable: Promise<void>, offset: number, length: number): Promise<void> {
    await durable;
    await this.#copyBefore(offset, length);
  }

  #copyBefore(offset: number, length: number): Promise<void> | undefined {
    const area = this.#diffArea;
    if (area !== undefined && area.needsCopy(offset, length)) {
      return area.copyOnWrite(offset, length);
    }
    return undefined;
  }

  /** Waits until the gate is open (the caller then counts its write in flight at once). */
  async #waitGate(): Promise<void> {
    while (this.gate[WriteGate.FROZEN] > 0) {
      await new Promise<void>((resolve) => this.#gateWaiters.push(resolve));
    }
  }

  #leave(): void {
    if (Atomics.sub(this.gate, WriteGate.IN_FLIGHT, 1) === 1) {
      Atomics.notify(this.gate, WriteGate.IN_FLIGHT);
      for (const resolve of this.#drained.splice(0)) resolve();
    }
  }

  /**
   * Closes the write gate and resolves once writes in flight, on any
   * thread, are done (engine use).
   */
  async freeze(): Promise<void> {
    Atomics.add(this.gate, WriteGate.FREEZES, 1);
    Atomics.add(this.gate, WriteGate.FROZEN, 1);
    for (;;) {
      const inFlight = Atomics.load(this.gate, WriteGate.IN_FLIGHT);
      if (inFlight === 0) return;
      // Another thread's last write notifies; this thread's resolves #drained; the timer keeps
      // the event loop alive (a pending Atomics.waitAsync does not) and bounds a missed wake.
      const wait = Atomics.waitAsync(this.gate, WriteGate.IN_FLIGHT, inFlight);
      if (!wait.async) continue;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        wait.value,
        new Promise<void>((resolve) => {
          this.#drained.push(resolve);
          timer = setTimeout(resolve, FREEZE_POLL_MS);
        }),
      ]);
      clearTimeout(timer);
    }
  }

  /** Reopens the write gate (engine use). */
  unfreeze(): void {
    if (Atomics.sub(this.gate, WriteGate.FROZEN, 1) === 1) {
      for (const resolve of this.#gateWaiters.splice(0)) resolve();
      Atomics.notify(this.gate, WriteGate.FROZEN);
    }
  }

  /** Joins or leaves a snapshot (engine use). */
  setSnapshot(snapshot: SnapshotMembership | undefined): void {
    this.#snapshot = snapshot;
  }

  /** Starts copy-on-write into `area`; call while frozen (engine use). */
  attachDiffArea(area: DiffArea): void {
    this.#diffArea = area;
  }

  /** Stops copy-on-write and returns the area it used; call while frozen (engine use). */
  detachDiffArea(): DiffArea | undefined {
    const area = this.#diffArea;
    this.#diffArea = undefined;
    return area;
  }
}
