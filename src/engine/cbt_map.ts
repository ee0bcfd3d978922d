/**
 * The change block tracking (CBT) map of one tracked device.
 *
 * Design note (seed 004_710bd6edcb17dcff.txt, cbt_map.c / cbt_map.h):
 * - one byte per tracking block in two tables: the write table, marked by
 *   every write with the active change number (only ever raising a byte), and
 *   the read table, which clients read;
 * - initially previous = 0, active = 1 and a random generation id;
 * - switch (at take): previous = active, active += 1; when active reaches 256
 *   it restarts at 1 with a cleared write table and a new generation id (the
 *   read table is left as it was); otherwise the read table becomes a copy of
 *   the write table;
 * - set (original writes) marks the write table; a block beyond the map marks
 *   what is in range, then corrupts the map (cbt_map_set); a corrupted map
 *   refuses marking and reading until reset;
 * - setBoth (image writes, mark-dirty) marks the write table with active and
 *   the read table with previous; out of range it fails without corrupting.
 *   Unlike the kernel, which marks up to the first bad block, setBoth checks
 *   the whole range first and marks nothing when it fails;
 * - reset (take after corruption or a capacity change): new sizing, cleared
 *   tables, previous 0 / active 1, new generation.
 * Offsets here are in bytes; markDirtySectors takes the kernel's sectors.
 * Persistence (not in the seed): an observer sees every newly marked range
 * of a table (only entries that rose), every switch and reset, and the map
 * becoming corrupted, so that a write-intent record can keep the tables on
 * stable storage (src/userspace/cbt_journal.ts); exportState and
 * restoreState carry a whole map across a restart.
 *
 * Flat state: both tables and a small Int32 header (active and previous
 * change numbers, corrupted flag, epoch; {@link CbtHeader}) live in one
 * SharedArrayBuffer, laid out header, read table, write table, so that
 * other threads can later mark and read it without copies. The epoch
 * counts switches and resets. The write path checks {@link CbtMap.isCorrupted}
 * before marking and marks with {@link CbtMap.mark}, which reports a block
 * beyond the map by its result rather than by an exception.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { SectorRange } from "../driver.ts";
import { type EngineParams, SECTOR_BYTES, trackingBlockSizing } from "./params.ts";

/** The last change number before the map restarts at 1 with a new generation. */
export const CBT_MAX_CHANGE_NUMBER = 255;

/** Int32 slots of a CBT map's header, at the start of its buffer. */
export const CbtHeader = {
  /** The change number writes mark now. */
  ACTIVE: 0,
  /** The change number of the last take. */
  PREVIOUS: 1,
  /** 1 after a marking error, until the next reset. */
  CORRUPTED: 2,
  /** Counts switches and resets (a new table layout or numbers). */
  EPOCH: 3,
} as const;

/** Bytes of the header before the read table. */
export const CBT_HEADER_BYTES = 16;

/** CBT state as the CBTINFO control reports it. */
export interface CbtMapInfo {
  /** Device capacity in bytes when the map was sized. */
  capacityBytes: number;
  /** Tracking block size in bytes. */
  blockSizeBytes: number;
  /** Number of tracking blocks. */
  blockCount: number;
  /** UUID of the generation; change numbers compare only within one generation. */
  generationId: string;
  /** The previous change number: read-table entries at or above it changed before the last take. */
  changesNumber: number;
}

/** A whole map as data: what {@link CbtMap.exportState} gives and {@link CbtMap.restoreState} takes. */
export interface CbtMapState {
  /** Power of 2 of the tracking block size. */
  blockShift: number;
  /** Number of tracking blocks (the length of each table). */
  blockCount: number;
  /** Device capacity in bytes the map was sized for. */
  capacityBytes: number;
  /** UUID of the generation. */
  generationId: string;
  /** The change number writes mark (1..255). */
  activeNumber: number;
  /** The change number of the last take (0..255). */
  previousNumber: number;
  /** True after a marking error, until the next reset. */
  corrupted: boolean;
  /** The read table, one byte per block. */
  readTable: Uint8Array;
  /** The write table, one byte per block. */
  writeTable: Uint8Array;
}

/** What happens to a map, for a persistent record of it (see {@link CbtMap.observe}). */
export interface CbtMapObserver {
  /** Entries `firstBlock..lastBlock` (inclusive) of `table` rose; called before the marking call returns. */
  marked(table: "write" | "read", firstBlock: number, lastBlock: number): void;
  /** The map switched at take: `wrap` when it restarted at 1 with a new generation and a cleared write table. */
  switched(kind: "switch" | "wrap"): void;
  /** The map was re-sized with cleared tables and a new generation. */
  reset(): void;
  /** The map became corrupted (a mark beyond its end). */
  corrupted(): void;
}

/** Read and write tables of one byte per tracking block, with change numbers and a generation. */
export class CbtMap {
  #params: EngineParams;
  #blockShift = 0;
  #blockCount = 0;
  #capacityBytes = 0;
  #buffer = new SharedArrayBuffer(CBT_HEADER_BYTES);
  #header = new Int32Array(this.#buffer, 0, 4);
  #readTable: Uint8Array = new Uint8Array(0);
  #writeTable: Uint8Array = new Uint8Array(0);
  #generationId = "";
  #observer: CbtMapObserver | undefined = undefined;

  /** A fresh map sized for `capacityBytes` with the tracking-block rules of `params`. */
  constructor(capacityBytes: number, params: EngineParams) {
    this.#params = params;
    this.reset(capacityBytes);
  }

  /** Power of 2 of the tracking block size. */
  get blockShift(): number {
    return this.#blockShift;
  }
  /** Tracking block size in bytes. */
  get blockSizeBytes(): number {
    return 2 ** this.#blockShift;
  }
  /** Number of tracking blocks. */
  get blockCount(): number {
    return this.#blockCount;
  }
  /** Device capacity in bytes the map was sized for. */
  get capacityBytes(): number {
    return this.#capacityBytes;
  }
  /** UUID of the current generation. */
  get generationId(): string {
    return this.#generationId;
  }
  /** The change number writes mark now. */
  get activeNumber(): number {
    return this.#header[CbtHeader.ACTIVE];
  }
  /** The change number of the last take. */
  get previousNumber(): number {
    return this.#header[CbtHeader.PREVIOUS];
  }
  /** True after a marking error, until the next reset. */
  get isCorrupted(): boolean {
    return this.#header[CbtHeader.CORRUPTED] !== 0;
  }
  /** Switches and resets so far. */
  get epoch(): number {
    return this.#header[CbtHeader.EPOCH];
  }
  /**
   * The memory behind the map: {@link CbtHeader} Int32 slots, then the read
   * table, then the write table (blockCount bytes each). Replaced at reset.
   */
  get buffer(): SharedArrayBuffer {
    return this.#buffer;
  }

  #blockRange(offsetBytes: number, lengthBytes: number): [number, number] {
    if (
      !Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) ||
      offsetBytes < 0 || lengthBytes < 0
    ) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot mark ${lengthBytes} bytes at ${offsetBytes} in the CBT map: not a valid range`,
      );
    }
    const first = Math.floor(offsetBytes / 2 ** this.#blockShift);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / 2 ** this.#blockShift);
    return [first, last];
  }

  #refuseCorrupted(action: string): void {
    if (this.isCorrupted) {
      throw new ServiceError(
        "IO",
        `Cannot ${action}: the CBT map is corrupted until the next snapshot is taken`,
        { errno: "EFAULT" },
      );
    }
  }

  #outOfRange(last: number): ServiceError {
    return new ServiceError(
      "OUT_OF_RANGE",
      `Cannot mark CBT block ${last}: the map has ${this.#blockCount} blocks`,
    );
  }

  /**
   * Marks the write table for a write of `lengthBytes` at `offsetBytes` with
   * the active number. A block beyond the map corrupts the map and throws
   * OUT_OF_RANGE; a corrupted map throws IO (EFAULT). Zero length is a no-op.
   */
  set(offsetBytes: number, lengthBytes: number): void {
    this.#refuseCorrupted("mark a write in the CBT map");
    if (lengthBytes === 0) return;
    this.#blockRange(offsetBytes, lengthBytes);
    if (!this.mark(offsetBytes, lengthBytes)) {
      throw this.#outOfRange(Math.floor((offsetBytes + lengthBytes - 1) / 2 ** this.#blockShift));
    }
  }

  /**
   * The write path's {@link CbtMap.set} for a valid, non-empty byte range of
   * a map the caller checked is not corrupted: marks what is in range and
   * returns false, corrupting the map, when a block lies beyond it.
   */
  mark(offsetBytes: number, lengthBytes: number): boolean {
    const size = 2 ** this.#blockShift;
    const first = Math.floor(offsetBytes / size);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / size);
    const table = this.#writeTable;
    const number = this.#header[CbtHeader.ACTIVE];
    const end = Math.min(last, this.#blockCount - 1);
    let rose = -1;
    let lastRose = -1;
    for (let i = first; i <= end; i++) {
      if (table[i] < number) {
        table[i] = number;
        if (rose < 0) rose = i;
        lastRose = i;
      }
    }
    if (rose >= 0) this.#observer?.marked("write", rose, lastRose);
    if (last < this.#blockCount) return true;
    this.#header[CbtHeader.CORRUPTED] = 1;
    this.#observer?.corrupted();
    return false;
  }

  /**
   * Marks both tables (write table with the active number, read table with
   * the previous one), as image writes and mark-dirty do. Throws OUT_OF_RANGE
   * beyond the map without marking or corrupting; IO (EFAULT) when corrupted.
   */
  setBoth(offsetBytes: number, lengthBytes: number): void {
    this.#refuseCorrupted("mark both CBT tables");
    if (lengthBytes === 0) return;
    const [, last] = this.#blockRange(offsetBytes, lengthBytes);
    if (!this.markBoth(offsetBytes, lengthBytes)) throw this.#outOfRange(last);
  }

  /**
   * {@link CbtMap.setBoth} for a valid, non-empty byte range of a map the
   * caller checked is not corrupted: returns false, marking nothing, when a
   * block lies beyond the map.
   */
  markBoth(offsetBytes: number, lengthBytes: number): boolean {
    const size = 2 ** this.#blockShift;
    const first = Math.floor(offsetBytes / size);
    const last = Math.floor((offsetBytes + lengthBytes - 1) / size);
    if (last >= this.#blockCount) return false;
    const active = this.#header[CbtHeader.ACTIVE];
    const previous = this.#header[CbtHeader.PREVIOUS];
    const write = this.#writeTable;
    const read = this.#readTable;
    let rose = false;
    for (let i = first; i <= last; i++) {
      if (write[i] < active) {
        write[i] = active;
        rose = true;
      }
      if (read[i] < previous) {
        read[i] = previous;
        rose = true;
      }
    }
    if (rose && this.#observer) {
      this.#observer.marked("write", first, last);
      this.#observer.marked("read", first, last);
    }
    return true;
  }

  /**
   * Marks sector ranges dirty in both tables (the CBTDIRTY control). All
   * ranges are checked first: INVALID_ARGUMENT for a malformed range,
   * OUT_OF_RANGE past the map; then all are marked.
   *
   * In O(ranges) plus the blocks marked once: the block runs are sorted by
   * their first block (one typed-array sort of packed keys), overlapping and
   * adjacent runs merged, and each merged run filled in both tables. A fill
   * equals the kernel's per-block maximum here because the write table only
   * ever holds values up to the active number and the read table values up
   * to the previous one (marks use those numbers; switch copies the write
   * table when active moves past it and keeps the read table when active
   * restarts at 1, previous then being 255; reset clears both).
   */
  markDirtySectors(ranges: readonly SectorRange[]): void {
    this.#refuseCorrupted("mark sectors dirty");
    const firsts = new Float64Array(ranges.length);
    const lasts = new Float64Array(ranges.length);
    ranges.forEach(({ offsetSectors, countSectors }, i) => {
      if (
        !Number.isSafeInteger(offsetSectors) || !Number.isSafeInteger(countSectors) ||
        offsetSectors < 0 || countSectors < 1
      ) {
        throw new ServiceError(
          "INVALID_ARGUMENT",
          `Cannot mark ${countSectors} sectors at ${offsetSectors} dirty: not a valid range`,
        );
      }
      const [first, last] = this.#blockRange(
        offsetSectors * SECTOR_BYTES,
        countSectors * SECTOR_BYTES,
      );
      if (last >= this.#blockCount) throw this.#outOfRange(last);
      firsts[i] = first;
      lasts[i] = last;
    });
    const active = this.#header[CbtHeader.ACTIVE];
    const previous = this.#header[CbtHeader.PREVIOUS];
    for (const [first, last] of mergedRuns(firsts, lasts)) {
      this.#writeTable.fill(active, first, last + 1);
      this.#readTable.fill(previous, first, last + 1);
      this.#observer?.marked("write", first, last);
      this.#observer?.marked("read", first, last);
    }
  }

  /**
   * Switches the tables at take (cbt_map_switch): previous = active,
   * active += 1; at 256 active restarts at 1 with a cleared write table and a
   * new generation, otherwise the read table becomes a copy of the write table.
   */
  switch(): void {
    const header = this.#header;
    header[CbtHeader.PREVIOUS] = header[CbtHeader.ACTIVE];
    header[CbtHeader.ACTIVE] += 1;
    if (header[CbtHeader.ACTIVE] > CBT_MAX_CHANGE_NUMBER) {
      header[CbtHeader.ACTIVE] = 1;
      this.#writeTable.fill(0);
      this.#generationId = crypto.randomUUID();
      header[CbtHeader.EPOCH] += 1;
      this.#observer?.switched("wrap");
    } else {
      this.#readTable.set(this.#writeTable);
      header[CbtHeader.EPOCH] += 1;
      this.#observer?.switched("switch");
    }
  }

  /**
   * Re-sizes the map for `capacityBytes` with cleared tables, previous 0,
   * active 1, a new generation and the corruption flag cleared (cbt_map_reset).
   */
  reset(capacityBytes: number): void {
    const { shift, count } = trackingBlockSizing(capacityBytes, this.#params);
    this.#layOut(shift, count, capacityBytes);
    this.#header[CbtHeader.PREVIOUS] = 0;
    this.#header[CbtHeader.ACTIVE] = 1;
    this.#generationId = crypto.randomUUID();
    this.#observer?.reset();
  }

  /** A new buffer of cleared tables for `count` blocks; the epoch carries on, plus one. */
  #layOut(shift: number, count: number, capacityBytes: number): void {
    this.#blockShift = shift;
    this.#blockCount = count;
    this.#capacityBytes = capacityBytes;
    const epoch = this.#header[CbtHeader.EPOCH];
    this.#buffer = new SharedArrayBuffer(CBT_HEADER_BYTES + 2 * count);
    this.#header = new Int32Array(this.#buffer, 0, 4);
    this.#readTable = new Uint8Array(this.#buffer, CBT_HEADER_BYTES, count);
    this.#writeTable = new Uint8Array(this.#buffer, CBT_HEADER_BYTES + count, count);
    this.#header[CbtHeader.EPOCH] = epoch + 1;
  }

  /** Sets (or with undefined, removes) the one observer of this map's changes. */
  observe(observer: CbtMapObserver | undefined): void {
    this.#observer = observer;
  }

  /**
   * The whole map as data. The tables are views of the live tables (valid
   * until the next reset): copy them to keep a snapshot of the map.
   */
  exportState(): CbtMapState {
    return {
      blockShift: this.#blockShift,
      blockCount: this.#blockCount,
      capacityBytes: this.#capacityBytes,
      generationId: this.#generationId,
      activeNumber: this.activeNumber,
      previousNumber: this.previousNumber,
      corrupted: this.isCorrupted,
      readTable: this.#readTable,
      writeTable: this.#writeTable,
    };
  }

  /**
   * Replaces the map with `state` (copied into a new buffer), as saved by a
   * previous run. Entries above the numbers they can hold (a record torn
   * between a table and its numbers) are lowered to them: write entries to
   * the active number, read entries to the previous one, so that they still
   * count as changed. INVALID_ARGUMENT when the sizes or numbers do not fit
   * together or the sizing differs from what the map's rules give for the
   * capacity.
   */
  restoreState(state: CbtMapState): void {
    const { shift, count } = trackingBlockSizing(state.capacityBytes, this.#params);
    const fits = shift === state.blockShift && count === state.blockCount &&
      state.readTable.length === count && state.writeTable.length === count &&
      Number.isInteger(state.activeNumber) && state.activeNumber >= 1 &&
      state.activeNumber <= CBT_MAX_CHANGE_NUMBER && Number.isInteger(state.previousNumber) &&
      state.previousNumber >= 0 && state.previousNumber <= CBT_MAX_CHANGE_NUMBER &&
      typeof state.generationId === "string" && state.generationId.length > 0;
    if (!fits) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot restore a CBT map of ${state.blockCount} blocks of 2^${state.blockShift} bytes ` +
          `(numbers ${state.previousNumber}/${state.activeNumber}) for ${state.capacityBytes} bytes`,
      );
    }
    this.#layOut(shift, count, state.capacityBytes);
    this.#writeTable.set(state.writeTable);
    this.#readTable.set(state.readTable);
    for (let i = 0; i < count; i++) {
      if (this.#writeTable[i] > state.activeNumber) this.#writeTable[i] = state.activeNumber;
      if (this.#readTable[i] > state.previousNumber) this.#readTable[i] = state.previousNumber;
    }
    this.#header[CbtHeader.ACTIVE] = state.activeNumber;
    this.#header[CbtHeader.PREVIOUS] = state.previousNumber;
    this.#header[CbtHeader.CORRUPTED] = state.corrupted ? 1 : 0;
    this.#generationId = state.generationId;
  }

  /**
   * A copy of `lengthBlocks` entries of the read table from block
   * `offsetBlocks`. OUT_OF_RANGE past the end; IO (EFAULT) when corrupted.
   */
  read(offsetBlocks: number, lengthBlocks: number): Uint8Array {
    this.#refuseCorrupted("read the CBT map");
    if (
      !Number.isSafeInteger(offsetBlocks) || !Number.isSafeInteger(lengthBlocks) ||
      offsetBlocks < 0 || lengthBlocks < 0 || offsetBlocks + lengthBlocks > this.#blockCount
    ) {
      throw new ServiceError(
        "OUT_OF_RANGE",
        `Cannot read ${lengthBlocks} CBT entries from block ${offsetBlocks}: ` +
          `the map has ${this.#blockCount} blocks`,
      );
    }
    return this.#readTable.slice(offsetBlocks, offsetBlocks + lengthBlocks);
  }

  /** Capacity, block size and count, generation and changes number (CBTINFO). */
  info(): CbtMapInfo {
    return {
      capacityBytes: this.#capacityBytes,
      blockSizeBytes: this.blockSizeBytes,
      blockCount: this.#blockCount,
      generationId: this.#generationId,
      changesNumber: this.previousNumber,
    };
  }
}

/**
 * The runs [first, last] of `firsts`/`lasts` (inclusive block ranges) sorted
 * and merged where they overlap or touch. Sorting packs (first, index) into
 * one number per run so that a numeric typed-array sort does it.
 */
function mergedRuns(firsts: Float64Array, lasts: Float64Array): Array<[number, number]> {
  const count = firsts.length;
  const scale = 2 ** Math.ceil(Math.log2(count + 1));
  let largest = 0;
  for (let i = 0; i < count; i++) largest = Math.max(largest, firsts[i]);
  if ((largest + 1) * scale > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(`Cannot sort ${count} runs up to block ${largest}: too many`);
  }
  const keys = new Float64Array(count);
  for (let i = 0; i < count; i++) keys[i] = firsts[i] * scale + i;
  keys.sort();
  const runs: Array<[number, number]> = [];
  for (let k = 0; k < count; k++) {
    const i = keys[k] % scale;
    const first = firsts[i];
    const last = lasts[i];
    const run = runs[runs.length - 1];
    if (run !== undefined && first <= run[1] + 1) {
      if (last > run[1]) run[1] = last;
    } else {
      runs.push([first, last]);
    }
  }
  return runs;
}
