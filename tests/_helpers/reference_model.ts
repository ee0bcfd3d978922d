/**
 * The plain reference model the engine is checked against: one byte array
 * per device, a frozen copy per image made at take plus the image writes,
 * and per device the tracking blocks changed since its last take. It knows
 * nothing of chunks, queues or storage.
 *
 * @module
 */

/** What the model knows about one device's change tracking. */
export interface ModelCbt {
  /** Tracking block size in bytes. */
  blockSizeBytes: number;
  /** 1 for each block written (original, image or mark-dirty) since the device's last take. */
  dirty: Uint8Array;
  /** Generation id seen at the last take. */
  generationId: string;
}

/** Devices, images and CBT expectations. */
export class ReferenceModel {
  /** Current content of each device. */
  readonly devices: Uint8Array[];
  /** Image content of each member of the current snapshot. */
  readonly images = new Map<number, Uint8Array>();
  /** CBT expectations per device. */
  readonly cbt: ModelCbt[];

  /** A model of devices with the given initial contents and CBT block sizes. */
  constructor(contents: Uint8Array[], blockSizes: number[], generations: string[]) {
    this.devices = contents.map((content) => content.slice());
    this.cbt = contents.map((content, d) => ({
      blockSizeBytes: blockSizes[d],
      dirty: new Uint8Array(Math.ceil(content.length / blockSizes[d])),
      generationId: generations[d],
    }));
  }

  #markDirty(d: number, offset: number, length: number): void {
    if (length === 0) return;
    const { blockSizeBytes, dirty } = this.cbt[d];
    const first = Math.floor(offset / blockSizeBytes);
    const last = Math.floor((offset + length - 1) / blockSizeBytes);
    dirty.fill(1, first, last + 1);
  }

  /** A write of `data` to device `d`. */
  write(d: number, offset: number, data: Uint8Array): void {
    this.devices[d].set(data, offset);
    this.#markDirty(d, offset, data.length);
  }

  /** Marks a byte range dirty without changing data (mark-dirty). */
  markDirty(d: number, offset: number, length: number): void {
    this.#markDirty(d, offset, length);
  }

  /** What a read of device `d` must return. */
  read(d: number, offset: number, length: number): Uint8Array {
    return this.devices[d].slice(offset, offset + length);
  }

  /** Take: each member's image becomes a copy of the device; its dirty blocks are returned and cleared. */
  take(members: number[]): Map<number, Uint8Array> {
    this.images.clear();
    const dirtyBefore = new Map<number, Uint8Array>();
    for (const d of members) {
      this.images.set(d, this.devices[d].slice());
      dirtyBefore.set(d, this.cbt[d].dirty.slice());
      this.cbt[d].dirty.fill(0);
    }
    return dirtyBefore;
  }

  /** Destroy: the images are gone. */
  destroy(): void {
    this.images.clear();
  }

  /** A write to device `d`'s image (it also marks the device's CBT). */
  writeImage(d: number, offset: number, data: Uint8Array): void {
    this.images.get(d)!.set(data, offset);
    this.#markDirty(d, offset, data.length);
  }

  /** What a read of device `d`'s image must return. */
  readImage(d: number, offset: number, length: number): Uint8Array {
    return this.images.get(d)!.slice(offset, offset + length);
  }
}

/**
 * The byte ranges used by a batch of concurrent operations, to keep out
 * pairs whose outcome depends on their order: same target, overlapping
 * bytes, at least one of them a write.
 */
export class BatchRanges {
  #ranges: Array<{ target: string; start: number; end: number; write: boolean }> = [];

  /** Whether an operation on `target` over [start, end) may join the batch; if so it is recorded. */
  claim(target: string, start: number, end: number, write: boolean): boolean {
    for (const range of this.#ranges) {
      if (
        range.target === target && (range.write || write) && start < range.end && range.start < end
      ) {
        return false;
      }
    }
    this.#ranges.push({ target, start, end, write });
    return true;
  }
}

/** Index of the first byte where `a` and `b` differ, or -1 when equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
