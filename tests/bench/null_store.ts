/**
 * A bench-only BlockStore of any size that keeps nothing: reads leave the
 * buffer as it is (the content is "whatever"), writes are dropped, growth
 * is free. It lets the memory row copy every chunk of a 512 GiB device
 * without a disk that size, so what is measured is the engine's own state.
 *
 * @module
 */

import type { BlockStore, StoreIdentity } from "../../src/engine/block_store.ts";

let nextDevice = 1 << 30;

/** A store of `capacityBytes` (grown on demand) that stores nothing. */
export class NullStore implements BlockStore {
  /** Name for messages. */
  readonly name: string;
  /** A unique memory identity. */
  readonly identity: StoreIdentity = { kind: "memory", device: nextDevice++, inode: 0 };
  /** 512 bytes. */
  readonly minIoBytes = 512;
  #capacity: number;

  /** A null store named `name` of `capacityBytes`. */
  constructor(name: string, capacityBytes: number) {
    this.name = name;
    this.#capacity = capacityBytes;
  }

  /** The current capacity. */
  get capacityBytes(): number {
    return this.#capacity;
  }

  /** Leaves `into` as it is. */
  read(): Promise<void> {
    return Promise.resolve();
  }

  /** Drops the data. */
  write(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to make durable. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Raises the capacity to `bytes`. */
  grow(bytes: number): Promise<void> {
    this.#capacity = Math.max(this.#capacity, bytes);
    return Promise.resolve();
  }

  /** The capacity. */
  refreshCapacity(): Promise<number> {
    return Promise.resolve(this.#capacity);
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
