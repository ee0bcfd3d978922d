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
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { SectorRange } from "../driver.ts";
import { type EngineParams, SECTOR_BYTES, trackingBlockSizing } from "./params.ts";

/** The last change number before the map restarts at 1 with a new generation. */
export const CBT_MAX_CHANGE_NUMBER = 255;

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

/** Read and write tables of one byte per tracking block, with change numbers and a generation. */
export class CbtMap {
  #params: EngineParams;
  #blockShift = 0;
  #blockCount = 0;
  #capacityBytes = 0;
  #readTable = new Uint8Array(0);
  #writeTable = new Uint8Array(0);
  #active = 1;
  #previous = 0;
  #generationId = "";
  #corrupted = false;

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
    return this.#active;
  }
  /** The change number of the last take. */
  get previousNumber(): number {
    return this.#previous;
  }
  /** True after a marking error, until the next reset. */
  get isCorrupted(): boolean {
    return this.#corrupted;
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
    if (this.#corrupted) {
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
    const [first, last] = this.#blockRange(offsetBytes, lengthBytes);
    const table = this.#writeTable;
    const number = this.#active;
    const end = Math.min(last, this.#blockCount - 1);
    for (let i = first; i <= end; i++) {
      if (table[i] < number) table[i] = number;
    }
    if (last >= this.#blockCount) {
      this.#corrupted = true;
      throw this.#outOfRange(last);
    }
  }

  /**
   * Marks both tables (write table with the active number, read table with
   * the previous one), as image writes and mark-dirty do. Throws OUT_OF_RANGE
   * beyond the map without marking or corrupting; IO (EFAULT) when corrupted.
   */
  setBoth(offsetBytes: number, lengthBytes: number): void {
    this.#refuseCorrupted("mark both CBT tables");
    if (lengthBytes === 0) return;
    const [first, last] = this.#blockRange(offsetBytes, lengthBytes);
    if (last >= this.#blockCount) throw this.#outOfRange(last);
    const active = this.#active;
    const previous = this.#previous;
    for (let i = first; i <= last; i++) {
      if (this.#writeTable[i] < active) this.#writeTable[i] = active;
      if (this.#readTable[i] < previous) this.#readTable[i] = previous;
    }
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
    for (const [first, last] of mergedRuns(firsts, lasts)) {
      this.#writeTable.fill(this.#active, first, last + 1);
      this.#readTable.fill(this.#previous, first, last + 1);
    }
  }

  /**
   * Switches the tables at take (cbt_map_switch): previous = active,
   * active += 1; at 256 active restarts at 1 with a cleared write table and a
   * new generation, otherwise the read table becomes a copy of the write table.
   */
  switch(): void {
    this.#previous = this.#active;
    this.#active += 1;
    if (this.#active > CBT_MAX_CHANGE_NUMBER) {
      this.#active = 1;
      this.#writeTable.fill(0);
      this.#generationId = crypto.randomUUID();
    } else {
      this.#readTable.set(this.#writeTable);
    }
  }

  /**
   * Re-sizes the map for `capacityBytes` with cleared tables, previous 0,
   * active 1, a new generation and the corruption flag cleared (cbt_map_reset).
   */
  reset(capacityBytes: number): void {
    const { shift, count } = trackingBlockSizing(capacityBytes, this.#params);
    this.#blockShift = shift;
    this.#blockCount = count;
    this.#capacityBytes = capacityBytes;
    this.#readTable = new Uint8Array(count);
    this.#writeTable = new Uint8Array(count);
    this.#previous = 0;
    this.#active = 1;
    this.#generationId = crypto.randomUUID();
    this.#corrupted = false;
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
      changesNumber: this.#previous,
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
