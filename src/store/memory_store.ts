/**
 * A BlockStore in memory: fast, for tests and benchmarks. Its capacity is
 * fixed unless a maximum is given, up to which {@link MemoryStore.grow}
 * extends it (a resizable ArrayBuffer, so growth does not copy).
 *
 * @module
 */

import type { BlockStore, StoreIdentity } from "../engine/block_store.ts";

let nextDevice = 1;

/** Options of a {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** Initial capacity in bytes. */
  capacityBytes: number;
  /** Capacity that {@link MemoryStore.grow} may reach; default: the initial capacity (fixed). */
  maxBytes?: number;
  /** Reported minimum I/O size; default 512. */
  minIoBytes?: number;
  /** Name for messages; default "memory-N". */
  name?: string;
}

/** A BlockStore backed by memory; reads of never-written bytes return zeros. */
export class MemoryStore implements BlockStore {
  /** Name for messages. */
  readonly name: string;
  /** A unique identity (kind "memory", a per-process device number). */
  readonly identity: StoreIdentity;
  /** Reported minimum I/O size in bytes. */
  readonly minIoBytes: number;
  /** Capacity {@link MemoryStore.grow} may reach. */
  readonly maxBytes: number;
  #buffer: ArrayBuffer;
  #data: Uint8Array;
  #capacity: number;
  #closed = false;

  /** A zero-filled store. RangeError for a negative capacity or a maximum below it. */
  constructor(options: MemoryStoreOptions) {
    const { capacityBytes } = options;
    const maxBytes = options.maxBytes ?? capacityBytes;
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0 || maxBytes < capacityBytes) {
      throw new RangeError(`Invalid memory store size ${capacityBytes} (max ${maxBytes})`);
    }
    const device = nextDevice++;
    this.name = options.name ?? `memory-${device}`;
    this.identity = { kind: "memory", device, inode: 0 };
    this.minIoBytes = options.minIoBytes ?? 512;
    this.maxBytes = maxBytes;
    this.#buffer = new ArrayBuffer(capacityBytes, { maxByteLength: maxBytes });
    this.#data = new Uint8Array(this.#buffer);
    this.#capacity = capacityBytes;
  }

  /** Current capacity in bytes. */
  get capacityBytes(): number {
    return this.#capacity;
  }

  #check(action: string, offset: number, length: number): void {
    if (this.#closed) throw new Error(`Cannot ${action} ${this.name}: the store is closed`);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.#capacity) {
      throw new RangeError(
        `Cannot ${action} ${length} bytes at ${offset} of ${this.name}: it holds ${this.#capacity} bytes`,
      );
    }
  }

  /** Copies `into.length` bytes from `offset`. RangeError past the capacity. */
  read(offset: number, into: Uint8Array): Promise<void> {
    try {
      this.#check("read", offset, into.length);
      into.set(this.#data.subarray(offset, offset + into.length));
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Copies `data` to `offset`. RangeError past the capacity. */
  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      this.#check("write", offset, data.length);
      this.#data.set(data, offset);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Nothing to make durable. */
  flush(): Promise<void> {
    return this.#closed ? Promise.reject(new Error(`${this.name} is closed`)) : Promise.resolve();
  }

  /** Grows to `bytes` (zero-filled). RangeError beyond {@link MemoryStore.maxBytes}. */
  grow(bytes: number): Promise<void> {
    if (this.#closed) return Promise.reject(new Error(`${this.name} is closed`));
    if (!Number.isSafeInteger(bytes) || bytes > this.maxBytes) {
      return Promise.reject(
        new RangeError(
          `Cannot grow ${this.name} to ${bytes} bytes: its maximum is ${this.maxBytes}`,
        ),
      );
    }
    if (bytes > this.#capacity) {
      this.#buffer.resize(bytes);
      this.#capacity = bytes;
    }
    return Promise.resolve();
  }

  /** The capacity (memory does not change behind the store's back). */
  refreshCapacity(): Promise<number> {
    return Promise.resolve(this.#capacity);
  }

  /** Releases the memory; further I/O rejects. */
  close(): Promise<void> {
    this.#closed = true;
    this.#buffer = new ArrayBuffer(0);
    this.#data = new Uint8Array(0);
    this.#capacity = 0;
    return Promise.resolve();
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** A copy of `length` bytes from `offset` (tests). */
  snapshotBytes(offset = 0, length: number = this.#capacity - offset): Uint8Array {
    return this.#data.slice(offset, offset + length);
  }
}
