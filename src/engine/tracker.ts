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
 * that no write lands between the switch of one member and another.
 * Write intent (md's write-intent bitmap, not in the seed): with a
 * {@link WriteIntent} set, a write waits after marking the CBT until the
 * marks made so far are on stable storage, before its data goes to the
 * original; when nothing is pending (the blocks were marked already) that
 * costs nothing.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { BlockStore } from "./block_store.ts";
import { CbtMap } from "./cbt_map.ts";
import type { DiffArea } from "./diff_area.ts";
import type { EngineParams } from "./params.ts";
import type { Snapshot } from "./snapshot.ts";
import type { EngineStats } from "./stats.ts";

const ZEROES = new Uint8Array(1 << 20);

/** A persistent record of the CBT that writes wait on (see src/userspace/cbt_journal.ts). */
export interface WriteIntent {
  /**
   * Undefined when every mark made so far is on stable storage, else a
   * promise that resolves once it is. Never rejects.
   */
  durable(): Promise<void> | undefined;
}

/** Options of a {@link Tracker}. */
export interface TrackerOptions {
  /** Engine parameters (tracking block sizing). */
  params: EngineParams;
  /** Engine counters. */
  stats: EngineStats;
}

/** An attached device: its store, its CBT map, and the write path with copy-on-write. */
export class Tracker {
  /** The device's unique name. */
  readonly name: string;
  /** The device's store; owned by the caller, never closed by the engine. */
  readonly store: BlockStore;
  /** The device's change block tracking map. */
  readonly cbt: CbtMap;
  #stats: EngineStats;
  #snapshot: Snapshot | undefined = undefined;
  #diffArea: DiffArea | undefined = undefined;
  #frozen = 0;
  #gate: Array<() => void> = [];
  #inFlight = 0;
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
  get snapshot(): Snapshot | undefined {
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

  async #io<T>(action: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      if (error instanceof ServiceError) throw error;
      throw new ServiceError("IO", `Cannot ${action} on ${this.name}: ${error}`, { cause: error });
    }
  }

  /** Reads `into.length` bytes of the original from `offset`. OUT_OF_RANGE past the end; IO. */
  async read(offset: number, into: Uint8Array): Promise<void> {
    this.#checkRange("read", offset, into.length);
    await this.#io("read", () => this.store.read(offset, into));
  }

  /**
   * Writes `data` at `offset`: marks the CBT, copies the chunks it touches
   * when a snapshot is taken, then writes the original. OUT_OF_RANGE past
   * the end; IO when the store fails.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#checkRange("write", offset, data.length);
    await this.#tracked(offset, data.length, () => this.store.write(offset, data));
  }

  /** Writes `length` zero bytes at `offset`, with the same semantics as {@link Tracker.write}. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#checkRange("write zeroes to", offset, length);
    await this.#tracked(offset, length, async () => {
      for (let done = 0; done < length;) {
        const count = Math.min(ZEROES.length, length - done);
        await this.store.write(offset + done, ZEROES.subarray(0, count));
        done += count;
      }
    });
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

  /** Makes completed writes durable. IO when the store fails. */
  flush(): Promise<void> {
    return this.#io("flush", () => this.store.flush());
  }

  async #tracked(offset: number, length: number, write: () => Promise<void>): Promise<void> {
    while (this.#frozen > 0) await new Promise<void>((resolve) => this.#gate.push(resolve));
    this.#inFlight += 1;
    try {
      if (length === 0) return;
      try {
        this.cbt.set(offset, length);
      } catch {
        // The map is now corrupted; the next take resets it (cbt_map_set).
      }
      const durable = this.#writeIntent?.durable();
      if (durable) await durable;
      const area = this.#diffArea;
      if (area && !area.isCorrupted) await area.copyOnWrite(offset, length);
      await this.#io("write", write);
      this.#stats.originalWrites += 1;
    } finally {
      this.#inFlight -= 1;
      if (this.#inFlight === 0) { for (const resolve of this.#drained.splice(0)) resolve(); }
    }
  }

  /** Closes the write gate and resolves once writes in flight are done (engine use). */
  async freeze(): Promise<void> {
    this.#frozen += 1;
    if (this.#inFlight > 0) await new Promise<void>((resolve) => this.#drained.push(resolve));
  }

  /** Reopens the write gate (engine use). */
  unfreeze(): void {
    this.#frozen -= 1;
    if (this.#frozen === 0) { for (const resolve of this.#gate.splice(0)) resolve(); }
  }

  /** Joins or leaves a snapshot (engine use). */
  setSnapshot(snapshot: Snapshot | undefined): void {
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
