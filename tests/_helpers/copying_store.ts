/**
 * A FaultyStore that can also copy to another store (BlockStore.copyTo), the
 * way FileStore copies in the kernel: for engine tests of the copy-on-write
 * path that goes NEW -> STORED directly, its refusal and its faults.
 *
 * The copy reads the inner store and writes the target through the target's
 * own write(), so the target's injected write faults and gates apply to the
 * copy as they would to the kernel writing the difference storage.
 *
 * @module
 */

import type { BlockStore, StoreCopyResult, StoreCopyTarget } from "../../src/engine/block_store.ts";
import { type FaultRule, FaultyStore, type FaultyStoreOptions } from "./faulty_store.ts";

/** A {@link FaultyStore} with copyTo, refusable and with injectable copy faults. */
export class CopyingStore extends FaultyStore {
  /** While true, copyTo answers "refused" (as the kernel does across some file systems). */
  refuseCopy = false;
  /** Fault for copies (offset and length in this store). */
  failCopy: FaultRule | undefined = undefined;
  /** While set, copies wait for it (after being counted). */
  copyGate: Promise<void> | undefined = undefined;
  /** Copies asked for, and how many of them were refused. */
  readonly copyCounts = { copies: 0, refused: 0 };

  /** Wraps `inner`. */
  constructor(inner: BlockStore, options: FaultyStoreOptions = {}) {
    super(inner, options);
  }

  /** Copies `length` bytes from `offset` into `to.target`, unless refused or faulted. */
  async copyTo(offset: number, length: number, to: StoreCopyTarget): Promise<StoreCopyResult> {
    this.copyCounts.copies += 1;
    if (this.closed) {
      this.usedAfterClose += 1;
      throw new Error(`${this.name} used after close`);
    }
    if (this.delay) await this.delay();
    while (this.copyGate) await this.copyGate;
    if (this.refuseCopy) {
      this.copyCounts.refused += 1;
      return "refused";
    }
    const fault = this.failCopy?.(offset, length);
    if (fault) throw fault;
    const data = new Uint8Array(length);
    await this.inner.read(offset, data);
    await to.target.write(to.targetOffset, data);
    return "copied";
  }
}
