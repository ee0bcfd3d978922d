/**
 * A BlockStore wrapper for fault and interleaving tests: it can delay every
 * operation, inject errors into reads, writes and growth, pretend to be
 * another kind of store, and it records any use after close.
 *
 * @module
 */

import type { BlockStore, StoreIdentity } from "../../src/engine/block_store.ts";

/** Returns an error to inject for an operation, or undefined to let it run. */
export type FaultRule = (offset: number, length: number) => Error | undefined;

/** Options of a {@link FaultyStore}. */
export interface FaultyStoreOptions {
  /** Identity to report instead of the inner store's. */
  identity?: StoreIdentity;
  /** Minimum I/O size to report instead of the inner store's. */
  minIoBytes?: number;
  /** Awaited before every read, write and grow (use it to create interleavings). */
  delay?: () => Promise<void>;
}

/** An injected I/O error with an errno-style code. */
export function ioError(message = "injected I/O error"): Error {
  return Object.assign(new Error(message), { code: "EIO" });
}

/** A BlockStore that forwards to `inner`, with injectable faults and delays. */
export class FaultyStore implements BlockStore {
  /** The wrapped store. */
  readonly inner: BlockStore;
  /** Reported identity. */
  readonly identity: StoreIdentity;
  /** Reported minimum I/O size. */
  readonly minIoBytes: number;
  /** Fault for reads. */
  failRead: FaultRule | undefined = undefined;
  /** Fault for writes. */
  failWrite: FaultRule | undefined = undefined;
  /** Fault for growth (offset is the requested size, length 0). */
  failGrow: FaultRule | undefined = undefined;
  /** Awaited before each operation. */
  delay: (() => Promise<void>) | undefined;
  /** While set, writes wait for it. */
  writeGate: Promise<void> | undefined = undefined;
  /** While set, reads wait for it. */
  readGate: Promise<void> | undefined = undefined;
  /** Operations started. */
  readonly counts = { reads: 0, writes: 0, grows: 0, flushes: 0 };
  /** Operations attempted after close (must stay 0). */
  usedAfterClose = 0;
  #closed = false;

  /** Wraps `inner`. */
  constructor(inner: BlockStore, options: FaultyStoreOptions = {}) {
    this.inner = inner;
    this.identity = options.identity ?? inner.identity;
    this.minIoBytes = options.minIoBytes ?? inner.minIoBytes;
    this.delay = options.delay;
  }

  /** The inner store's name, marked. */
  get name(): string {
    return `faulty(${this.inner.name})`;
  }

  /** The inner store's capacity. */
  get capacityBytes(): number {
    return this.inner.capacityBytes;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  async #enter(): Promise<void> {
    if (this.#closed) {
      this.usedAfterClose += 1;
      throw new Error(`${this.name} used after close`);
    }
    if (this.delay) await this.delay();
  }

  /** Reads through (after `readGate`), unless `failRead` says otherwise. */
  async read(offset: number, into: Uint8Array): Promise<void> {
    this.counts.reads += 1;
    await this.#enter();
    while (this.readGate) await this.readGate;
    const fault = this.failRead?.(offset, into.length);
    if (fault) throw fault;
    await this.inner.read(offset, into);
  }

  /** Writes through (after `writeGate`), unless `failWrite` says otherwise. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.counts.writes += 1;
    await this.#enter();
    while (this.writeGate) await this.writeGate;
    const fault = this.failWrite?.(offset, data.length);
    if (fault) throw fault;
    await this.inner.write(offset, data);
  }

  /** Flushes through. */
  async flush(): Promise<void> {
    this.counts.flushes += 1;
    await this.#enter();
    await this.inner.flush();
  }

  /** Grows through, unless `failGrow` says otherwise. */
  async grow(bytes: number): Promise<void> {
    this.counts.grows += 1;
    await this.#enter();
    const fault = this.failGrow?.(bytes, 0);
    if (fault) throw fault;
    await this.inner.grow(bytes);
  }

  /** The inner store's capacity, re-read. */
  refreshCapacity(): Promise<number> {
    return this.inner.refreshCapacity();
  }

  /** Closes the inner store. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.inner.close();
  }
}

/** A gate that holds operations until opened. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Yields to the microtask queue `count` times. */
export async function yieldMicrotasks(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await Promise.resolve();
}
