/**
 * Test exports for the NBD server: {@link MemoryExport} (sparse-aware, with a
 * dirty-bitmap context whose extents the test controls) and
 * {@link FileExport} (a real file through node:fs/promises positioned I/O).
 *
 * @module
 */

import { readSync, writeSync } from "node:fs";
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { ServiceError } from "../../src/errors.ts";
import type { NbdBlockSize, NbdExport, NbdExtent } from "../../src/nbd/export.ts";

/** Allocation granularity of {@link MemoryExport}, in bytes. */
export const ALLOCATION_BLOCK = 4096;
/** Granularity of {@link MemoryExport}'s dirty bitmap, in bytes. */
export const DIRTY_BLOCK = 64 * 1024;
/** The name of {@link MemoryExport}'s dirty-bitmap context. */
export const DIRTY_CONTEXT = "qemu:dirty-bitmap:test";

/** Options of {@link MemoryExport}. */
export interface MemoryExportOptions {
  /** Export name. */
  name: string;
  /** Size in bytes. */
  sizeBytes: number;
  /** Description for NBD_OPT_LIST. */
  description?: string;
  /** Refuse writes. */
  readOnly?: boolean;
  /** Advertised constraints. */
  blockSize?: NbdBlockSize;
  /** Whether writeZeroes with fastZero succeeds (true) or is refused as slow. */
  fastZero?: boolean;
  /** Milliseconds each read waits before completing (to force out-of-order replies). */
  readDelayMs?: number;
}

/**
 * An export in memory. Tracks allocation per 4 KiB block (base:allocation
 * reports unallocated blocks as HOLE|ZERO) and a dirty bit per 64 KiB block
 * that writes set and {@link MemoryExport.markDirty} / `clearDirty` control.
 */
export class MemoryExport implements NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly blockSize?: NbdBlockSize;
  readonly canMultiConn = true;
  /** The contents. */
  readonly data: Uint8Array;
  /** Every write applied: offset and length. */
  readonly writes: { offset: number; length: number }[] = [];
  /** Number of flushes. */
  flushes = 0;
  /** Reads delay this many milliseconds. */
  readDelayMs: number;
  #allocated: Uint8Array;
  #dirty: Uint8Array;
  #fastZero: boolean;

  constructor(options: MemoryExportOptions) {
    this.name = options.name;
    this.description = options.description;
    this.sizeBytes = options.sizeBytes;
    this.readOnly = options.readOnly ?? false;
    this.blockSize = options.blockSize;
    this.#fastZero = options.fastZero ?? true;
    this.readDelayMs = options.readDelayMs ?? 0;
    this.data = new Uint8Array(options.sizeBytes);
    this.#allocated = new Uint8Array(Math.ceil(options.sizeBytes / ALLOCATION_BLOCK));
    this.#dirty = new Uint8Array(Math.ceil(options.sizeBytes / DIRTY_BLOCK));
  }

  /** Puts `bytes` at `offset` and marks the blocks allocated, without dirtying them. */
  fill(offset: number, bytes: Uint8Array): void {
    this.data.set(bytes, offset);
    this.#allocate(offset, bytes.length, true);
  }

  /** Marks the dirty blocks touching `[offset, offset + length)`. */
  markDirty(offset: number, length: number): void {
    const last = Math.ceil((offset + length) / DIRTY_BLOCK);
    this.#dirty.fill(1, Math.floor(offset / DIRTY_BLOCK), last);
  }

  /** Clears the whole dirty bitmap. */
  clearDirty(): void {
    this.#dirty.fill(0);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    if (this.readDelayMs > 0) await new Promise((r) => setTimeout(r, this.readDelayMs));
    into.set(this.data.subarray(offset, offset + into.length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    this.data.set(data, offset);
    this.writes.push({ offset, length: data.length });
    this.#allocate(offset, data.length, true);
    this.markDirty(offset, data.length);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    this.flushes++;
    return Promise.resolve();
  }

  trim(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
    this.#deallocate(offset, length);
    this.markDirty(offset, length);
    return Promise.resolve();
  }

  writeZeroes(
    offset: number,
    length: number,
    options: { noHole: boolean; fastZero: boolean },
  ): Promise<void> {
    if (options.fastZero && !this.#fastZero) {
      return Promise.reject(
        new ServiceError("NOT_SUPPORTED", "Cannot zero fast: this test export is slow"),
      );
    }
    this.data.fill(0, offset, offset + length);
    if (options.noHole) this.#allocate(offset, length, true);
    else this.#deallocate(offset, length);
    this.markDirty(offset, length);
    return Promise.resolve();
  }

  metaContexts(): string[] {
    return [DIRTY_CONTEXT];
  }

  blockStatus(context: string, offset: number, length: number): Promise<NbdExtent[]> {
    if (context === "base:allocation") {
      return Promise.resolve(
        runs(this.#allocated, ALLOCATION_BLOCK, offset, length, this.sizeBytes, (v) => v ? 0 : 3),
      );
    }
    if (context === DIRTY_CONTEXT) {
      return Promise.resolve(
        runs(this.#dirty, DIRTY_BLOCK, offset, length, this.sizeBytes, (v) => v ? 1 : 0),
      );
    }
    return Promise.reject(new ServiceError("NOT_FOUND", `no context ${context}`));
  }

  #allocate(offset: number, length: number, value: boolean): void {
    const last = Math.ceil((offset + length) / ALLOCATION_BLOCK);
    this.#allocated.fill(value ? 1 : 0, Math.floor(offset / ALLOCATION_BLOCK), last);
  }

  #deallocate(offset: number, length: number): void {
    const first = Math.ceil(offset / ALLOCATION_BLOCK);
    const end = offset + length === this.sizeBytes
      ? this.#allocated.length
      : Math.floor((offset + length) / ALLOCATION_BLOCK);
    if (end > first) this.#allocated.fill(0, first, end);
  }
}

function runs(
  map: Uint8Array,
  block: number,
  offset: number,
  length: number,
  size: number,
  flagsOf: (value: number) => number,
): NbdExtent[] {
  const out: NbdExtent[] = [];
  const end = Math.min(offset + length, size);
  let position = offset;
  while (position < end) {
    const index = Math.floor(position / block);
    const next = Math.min((index + 1) * block, size);
    const flags = flagsOf(map[index]);
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += next - position;
    else out.push({ length: next - position, flags });
    position = next;
  }
  return out;
}

/** Options of {@link FileExport.open}. */
export interface FileExportOptions {
  /** Export name. */
  name: string;
  /** Refuse writes. */
  readOnly?: boolean;
  /** Description for NBD_OPT_LIST. */
  description?: string;
  /**
   * "async" (default): node:fs/promises positioned I/O, one event-loop round
   * trip per call. "sync": readSync/writeSync with a position, which block
   * the event loop for the duration of each call: much cheaper for a file in
   * the page cache, a stall for every connection on a slow disk.
   */
  io?: "async" | "sync";
}

/** An export backed by a real file, through positioned reads and writes. */
export class FileExport implements NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly canMultiConn = true;
  #handle: FileHandle;
  #sync: boolean;

  private constructor(handle: FileHandle, sizeBytes: number, options: FileExportOptions) {
    this.#handle = handle;
    this.name = options.name;
    this.sizeBytes = sizeBytes;
    this.readOnly = options.readOnly ?? false;
    this.description = options.description;
    this.#sync = options.io === "sync";
  }

  /** Opens the existing file at `path`; its current size is the export size. */
  static async open(path: string, options: FileExportOptions): Promise<FileExport> {
    const handle = await open(path, options.readOnly ? "r" : "r+");
    const { size } = await handle.stat();
    return new FileExport(handle, size, options);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const bytesRead = this.#sync
        ? readSync(this.#handle.fd, into, done, into.length - done, offset + done)
        : (await this.#handle.read(into, done, into.length - done, offset + done)).bytesRead;
      if (bytesRead === 0) throw new ServiceError("IO", `Cannot read at ${offset + done}: EOF`);
      done += bytesRead;
    }
  }

  async write(offset: number, data: Uint8Array, options: { fua: boolean }): Promise<void> {
    let done = 0;
    while (done < data.length) {
      done += this.#sync
        ? writeSync(this.#handle.fd, data, done, data.length - done, offset + done)
        : (await this.#handle.write(data, done, data.length - done, offset + done)).bytesWritten;
    }
    if (options.fua) await this.#handle.datasync();
  }

  async flush(): Promise<void> {
    await this.#handle.datasync();
  }

  /** Closes the file. */
  async close(): Promise<void> {
    await this.#handle.close();
  }
}
