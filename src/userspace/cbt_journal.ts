/**
 * The CBT of one device on stable storage, so that it survives a restart
 * and a crash (kill -9, power loss): a write-intent record in the manner of
 * md's write-intent bitmap.
 *
 * Design note. One file per device in the state folder (`cbt/<device>.cbt`):
 *
 * ```
 * 0      header slot 0 (4 KiB)   u32 length, u32 crc32, JSON header
 * 4096   header slot 1 (4 KiB)
 * 8192   write table (blockCount bytes, padded to 4 KiB)
 * ...    read table  (blockCount bytes)
 * ```
 *
 * The header carries the generation, the change numbers, the sizing, the
 * corruption flag, whether the record was closed cleanly, and the device's
 * identity (path, kind, device and inode or rdev, size, and at a clean close
 * the file's mtime). Headers alternate between the two slots with a rising
 * sequence; the newest whole one wins, so a header torn by a power loss
 * falls back to the previous one.
 * - A mark: the CBT map tells the journal (CbtMapObserver) which entries
 *   rose, the journal pwrites those bytes at once (into the page cache: a
 *   kill -9 from then on cannot lose them) and notes that an fdatasync is
 *   owed. The tracker asks {@link CbtJournal.durable} before the write's
 *   data goes to the device: when marks are owed, it waits for an fdatasync
 *   that starts after them. One fdatasync runs at a time and every mark
 *   queued meanwhile shares the next one, so concurrent writers batch.
 *   Blocks marked already mark nothing and wait for nothing (unless a sync
 *   for other marks is in flight, whose marks may be theirs too).
 * - Take (the map switches while the devices are frozen): the new read
 *   table is written and synced before the header with the new numbers,
 *   so that a crash in between leaves the old numbers with a read table
 *   that is a superset of the old one; at the 255 wrap the header (new
 *   generation, active 1) goes first and the cleared write table after, so
 *   a crash leaves old marks clamped to the new numbers (a superset again).
 *   Writes with the new number wait for the header's fdatasync like any
 *   mark. Reset (take after a resize or corruption) writes the new header,
 *   syncs, then clears the tables.
 * - A restored map is clamped (CbtMap.restoreState): entries above the
 *   numbers count as changed at those numbers. So after a crash the map is
 *   a superset of the real changes, never missing a block.
 * - Whole records (a new device, a start after a restore, a clean close)
 *   are written to a temporary file, synced and renamed over the old one.
 * - A journal that fails (a pwrite or fdatasync error) logs it, removes its
 *   file (a next start cannot vouch for the map: new generation) and stops
 *   making writes wait; a clean close still writes a whole record.
 *
 * @module
 */

import { constants, fdatasyncSync, ftruncateSync, writeSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { CbtMap, CbtMapObserver, CbtMapState } from "../engine/cbt_map.ts";
import type { WriteIntent } from "../engine/tracker.ts";
import type { NbdLogger } from "../nbd/mod.ts";
import { crc32 } from "./crc32.ts";

const SLOT_BYTES = 4096;
const TABLES_OFFSET = 2 * SLOT_BYTES;
const MAGIC = "blksnap-cbt";

/** What a device was when its record was written, to tell whether it changed while stopped. */
export interface DeviceIdentityRecord {
  /** The path it was attached from. */
  path: string;
  /** A regular file or a block device. */
  kind: "file" | "block";
  /** st_dev of a file, st_rdev of a block device. */
  device: number;
  /** A file's inode (0 for a block device). */
  inode: number;
  /** Size in bytes. */
  sizeBytes: number;
  /** A file's modification time in ms, recorded at a clean close only. */
  mtimeMs?: number;
}

interface Header {
  magic: typeof MAGIC;
  version: 1;
  sequence: number;
  clean: boolean;
  generationId: string;
  blockShift: number;
  blockCount: number;
  capacityBytes: number;
  activeNumber: number;
  previousNumber: number;
  corrupted: boolean;
  identity: DeviceIdentityRecord;
}

/** A record read back by {@link loadCbtRecord}. */
export interface CbtRecord {
  /** The map as recorded (tables copied out of the file). */
  state: CbtMapState;
  /** True when the service closed the record cleanly (no crash since). */
  clean: boolean;
  /** The device as recorded. */
  identity: DeviceIdentityRecord;
}

function tableBytes(blockCount: number): number {
  return Math.ceil(blockCount / SLOT_BYTES) * SLOT_BYTES;
}

function readTableOffset(blockCount: number): number {
  return TABLES_OFFSET + tableBytes(blockCount);
}

function encodeHeader(header: Header): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  if (json.length > SLOT_BYTES - 8) throw new RangeError("CBT record header too long");
  const slot = new Uint8Array(SLOT_BYTES);
  const view = new DataView(slot.buffer);
  view.setUint32(0, json.length, true);
  view.setUint32(4, crc32(json), true);
  slot.set(json, 8);
  return slot;
}

function decodeHeader(slot: Uint8Array): Header | undefined {
  if (slot.length < SLOT_BYTES) return undefined;
  const view = new DataView(slot.buffer, slot.byteOffset, SLOT_BYTES);
  const length = view.getUint32(0, true);
  if (length === 0 || length > SLOT_BYTES - 8) return undefined;
  const json = slot.subarray(8, 8 + length);
  if (crc32(json) !== view.getUint32(4, true)) return undefined;
  try {
    const header = JSON.parse(new TextDecoder().decode(json)) as Header;
    return header.magic === MAGIC && header.version === 1 ? header : undefined;
  } catch {
    return undefined;
  }
}

/** The record file of device `name` in `stateDir`. */
export function cbtRecordPath(stateDir: string, name: string): string {
  return join(stateDir, "cbt", `${name}.cbt`);
}

/**
 * Reads the record at `path`: the record, undefined when there is none, or
 * a `problem` saying why it cannot be trusted (unreadable, torn, truncated).
 */
export async function loadCbtRecord(
  path: string,
): Promise<{ record?: CbtRecord; problem?: string }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return {};
    return { problem: `cannot read ${path}: ${(error as Error).message}` };
  }
  const headers = [0, 1].map((slot) =>
    decodeHeader(bytes.subarray(slot * SLOT_BYTES, (slot + 1) * SLOT_BYTES))
  ).filter((header): header is Header => header !== undefined);
  if (headers.length === 0) return { problem: `${path} has no whole header` };
  const header = headers.reduce((a, b) => (b.sequence > a.sequence ? b : a));
  const { blockCount } = header;
  const end = readTableOffset(blockCount) + blockCount;
  if (!Number.isSafeInteger(blockCount) || blockCount < 0 || bytes.length < end) {
    return { problem: `${path} is shorter than its ${blockCount} blocks need` };
  }
  return {
    record: {
      clean: header.clean,
      identity: header.identity,
      state: {
        blockShift: header.blockShift,
        blockCount,
        capacityBytes: header.capacityBytes,
        generationId: header.generationId,
        activeNumber: header.activeNumber,
        previousNumber: header.previousNumber,
        corrupted: header.corrupted,
        writeTable: bytes.slice(TABLES_OFFSET, TABLES_OFFSET + blockCount),
        readTable: bytes.slice(readTableOffset(blockCount), end),
      },
    },
  };
}

/** Removes the record file at `path` (detach); a missing file is fine. */
export async function removeCbtRecord(path: string): Promise<void> {
  await Deno.remove(path).catch(() => {});
}

function headerOf(map: CbtMap, identity: DeviceIdentityRecord, sequence: number, clean: boolean) {
  const state = map.exportState();
  return {
    magic: MAGIC,
    version: 1,
    sequence,
    clean,
    generationId: state.generationId,
    blockShift: state.blockShift,
    blockCount: state.blockCount,
    capacityBytes: state.capacityBytes,
    activeNumber: state.activeNumber,
    previousNumber: state.previousNumber,
    corrupted: state.corrupted,
    identity,
  } satisfies Header;
}

async function syncFolder(path: string): Promise<void> {
  const folder = await open(dirname(path), constants.O_RDONLY);
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}

/**
 * Writes a whole record of `map` to `path` (temporary file, fdatasync,
 * rename, folder sync) and returns the open handle of the new file. No
 * temporary file is left when it fails.
 */
async function writeWholeRecord(
  path: string,
  map: CbtMap,
  options: { identity: DeviceIdentityRecord; sequence: number; clean: boolean },
): Promise<FileHandle> {
  await Deno.mkdir(dirname(path), { recursive: true });
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  const handle = await open(temporary, "w+", 0o600);
  try {
    const state = map.exportState();
    const header = encodeHeader(headerOf(map, options.identity, options.sequence, options.clean));
    await handle.write(header, 0, SLOT_BYTES, 0);
    await handle.write(header, 0, SLOT_BYTES, SLOT_BYTES);
    await handle.truncate(readTableOffset(state.blockCount) + tableBytes(state.blockCount));
    if (state.blockCount > 0) {
      await handle.write(state.writeTable, 0, state.blockCount, TABLES_OFFSET);
      await handle.write(state.readTable, 0, state.blockCount, readTableOffset(state.blockCount));
    }
    await handle.datasync();
    await Deno.rename(temporary, path);
    await syncFolder(path);
    return handle;
  } catch (error) {
    await handle.close().catch(() => {});
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

/** Options of {@link CbtJournal.open}. */
export interface CbtJournalOptions {
  /** The device as it is now (written into each header). */
  identity: DeviceIdentityRecord;
  /** Where failures are reported. */
  logger?: NbdLogger;
}

/** The write-intent record of one device's CBT map. */
export class CbtJournal implements CbtMapObserver, WriteIntent {
  readonly #path: string;
  readonly #map: CbtMap;
  readonly #identity: DeviceIdentityRecord;
  readonly #logger?: NbdLogger;
  #handle: FileHandle | undefined;
  #fd = -1;
  #sequence = 1;
  #dirty = false;
  #syncing: Promise<void> | undefined = undefined;
  #queued: Promise<void> | undefined = undefined;
  /** True once closed or failed: marks are no longer recorded. */
  #stopped = false;

  private constructor(path: string, map: CbtMap, handle: FileHandle, options: CbtJournalOptions) {
    this.#path = path;
    this.#map = map;
    this.#handle = handle;
    this.#fd = handle.fd;
    this.#identity = options.identity;
    this.#logger = options.logger;
  }

  /**
   * Writes a whole record of `map` at `path` (replacing any) and starts
   * journaling the map's changes; the record says "not closed cleanly" until
   * {@link CbtJournal.close}. Rejects with the file-system error when the
   * record cannot be written (nothing is left behind then).
   */
  static async open(path: string, map: CbtMap, options: CbtJournalOptions): Promise<CbtJournal> {
    const handle = await writeWholeRecord(path, map, {
      identity: options.identity,
      sequence: 1,
      clean: false,
    });
    const journal = new CbtJournal(path, map, handle, options);
    map.observe(journal);
    return journal;
  }

  #fail(error: unknown): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#logger?.(
      "error",
      `userspace: the CBT record ${this.#path} failed (${(error as Error)?.message ?? error}); ` +
        "it is removed, and a crash before the next clean stop starts a new CBT generation",
    );
    const handle = this.#handle;
    this.#handle = undefined;
    handle?.close().catch(() => {});
    Deno.remove(this.#path).catch(() => {});
  }

  #pwrite(bytes: Uint8Array, position: number): void {
    for (let done = 0; done < bytes.length;) {
      done += writeSync(this.#fd, bytes, done, bytes.length - done, position + done);
    }
  }

  /** Guards a synchronous step: an error fails the journal instead of reaching the map's caller. */
  #step(run: () => void): void {
    if (this.#stopped) return;
    try {
      run();
    } catch (error) {
      this.#fail(error);
    }
  }

  #writeHeader(): void {
    this.#sequence += 1;
    const header = encodeHeader(headerOf(this.#map, this.#identity, this.#sequence, false));
    this.#pwrite(header, (this.#sequence % 2) * SLOT_BYTES);
    this.#dirty = true;
  }

  /** CbtMapObserver: pwrites the entries that rose; an fdatasync is owed. */
  marked(table: "write" | "read", firstBlock: number, lastBlock: number): void {
    this.#step(() => {
      const state = this.#map.exportState();
      const source = table === "write" ? state.writeTable : state.readTable;
      const base = table === "write" ? TABLES_OFFSET : readTableOffset(state.blockCount);
      this.#pwrite(source.subarray(firstBlock, lastBlock + 1), base + firstBlock);
      this.#dirty = true;
    });
  }

  /** CbtMapObserver: the take's tables and numbers, in the order the design note gives. */
  switched(kind: "switch" | "wrap"): void {
    this.#step(() => {
      const state = this.#map.exportState();
      if (kind === "switch") {
        this.#pwrite(state.readTable, readTableOffset(state.blockCount));
        fdatasyncSync(this.#fd);
        this.#writeHeader();
      } else {
        this.#writeHeader();
        fdatasyncSync(this.#fd);
        this.#pwrite(state.writeTable, TABLES_OFFSET);
      }
    });
  }

  /** CbtMapObserver: a re-sized map: header first, then cleared tables. */
  reset(): void {
    this.#step(() => {
      const { blockCount } = this.#map.exportState();
      this.#writeHeader();
      fdatasyncSync(this.#fd);
      ftruncateSync(this.#fd, TABLES_OFFSET);
      ftruncateSync(this.#fd, readTableOffset(blockCount) + tableBytes(blockCount));
    });
  }

  /** CbtMapObserver: records the corruption before any later write goes on. */
  corrupted(): void {
    this.#step(() => this.#writeHeader());
  }

  /** WriteIntent: undefined when every mark is durable, else the fdatasync that makes it so. */
  durable(): Promise<void> | undefined {
    if (this.#stopped) return undefined;
    if (!this.#dirty) return this.#syncing;
    if (this.#queued) return this.#queued;
    if (!this.#syncing) return this.#startSync();
    const running = this.#syncing;
    this.#queued = running.then(() => {
      this.#queued = undefined;
      return this.#startSync();
    });
    return this.#queued;
  }

  #startSync(): Promise<void> {
    const handle = this.#handle;
    if (this.#stopped || !handle) return Promise.resolve();
    this.#dirty = false;
    const run: Promise<void> = handle.datasync()
      .catch((error) => this.#fail(error))
      .finally(() => {
        if (this.#syncing === run) this.#syncing = undefined;
      });
    this.#syncing = run;
    return run;
  }

  /**
   * Stops journaling and, when `clean`, writes a whole record marked closed
   * cleanly with `identity` (the device as it is now, with its mtime).
   * Rejects with the file-system error when that record cannot be written
   * (the previous record then stays, not clean).
   */
  async close(options: { clean: boolean; identity?: DeviceIdentityRecord }): Promise<void> {
    this.#map.observe(undefined);
    while (this.#syncing || this.#queued) await (this.#queued ?? this.#syncing);
    const handle = this.#handle;
    this.#handle = undefined;
    this.#stopped = true;
    if (handle) await handle.close().catch(() => {});
    if (!options.clean) return;
    const whole = await writeWholeRecord(this.#path, this.#map, {
      identity: options.identity ?? this.#identity,
      sequence: this.#sequence + 1,
      clean: true,
    });
    await whole.close();
  }
}
