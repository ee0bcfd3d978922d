/**
 * A Worker's reads of a read-only snapshot image (fast_path.ts ImageView):
 * NEW chunks from the original, STORED chunks from the difference storage,
 * on the Worker's own descriptors, by the rules of
 * src/userspace/image_fast_path.ts. A read it cannot serve exactly (a chunk
 * in transition, a corrupted area, destroy under way, a failed pread)
 * answers false, and the request goes to the owner.
 *
 * @module
 */

import type { ImageView } from "./fast_path.ts";
import { type Libc, libc } from "./libc.ts";

const CHUNK_NEW = 0;
const CHUNK_STORED = 2;
/** engine AreaControl. */
const CORRUPTED = 0;
const STOPPING = 1;
const IMAGE_IO = 2;

/** Reads of one image on two descriptors. */
export class ImageReader {
  readonly #libc: Libc = libc();
  readonly #origin: number;
  readonly #storage: number;
  readonly #states: Uint8Array<SharedArrayBuffer>;
  readonly #offsets: Float64Array<SharedArrayBuffer>;
  readonly #control: Int32Array<SharedArrayBuffer>;
  readonly #chunkBytes: number;
  readonly #sizeBytes: number;

  /** Reads `view`'s image from the descriptors `origin` and `storage` (owned by the caller). */
  constructor(view: ImageView, origin: number, storage: number) {
    this.#origin = origin;
    this.#storage = storage;
    this.#states = new Uint8Array(view.table, view.statesOffset, view.count);
    this.#offsets = new Float64Array(view.table, 0, view.count);
    this.#control = new Int32Array(view.control);
    this.#chunkBytes = 2 ** view.shift;
    this.#sizeBytes = view.sizeBytes;
  }

  /** Reads `into.length` bytes of the image at `offset`: true when done, false when the owner must. */
  read(offset: number, into: Uint8Array): boolean {
    const end = offset + into.length;
    if (end > this.#sizeBytes) return false;
    const control = this.#control;
    Atomics.add(control, IMAGE_IO, 1);
    try {
      if (Atomics.load(control, STOPPING) !== 0 || Atomics.load(control, CORRUPTED) !== 0) {
        return false;
      }
      const states = this.#states;
      const chunk = this.#chunkBytes;
      const first = Math.floor(offset / chunk);
      const last = Math.floor((end - 1) / chunk);
      let fromOriginal = false;
      for (let index = first; index <= last; index++) {
        const state = Atomics.load(states, index);
        fromOriginal ||= state === CHUNK_NEW;
        if (!this.#readChunk(index, state, offset, into)) return false;
      }
      // A chunk read from the original that left NEW meanwhile is read again, from the storage
      // (STORED never changes in a read-only snapshot: those read already stand).
      for (let index = first; fromOriginal && index <= last; index++) {
        const state = Atomics.load(states, index);
        if (state === CHUNK_NEW) continue;
        if (state !== CHUNK_STORED) return false;
        if (!this.#readChunk(index, state, offset, into)) return false;
      }
      return Atomics.load(control, STOPPING) === 0 && Atomics.load(control, CORRUPTED) === 0;
    } finally {
      if (Atomics.sub(control, IMAGE_IO, 1) === 1) Atomics.notify(control, IMAGE_IO);
    }
  }

  /** Reads the part of chunk `index` (in `state`) that `into` (image bytes from `offset`) covers. */
  #readChunk(index: number, state: number, offset: number, into: Uint8Array): boolean {
    const chunkStart = index * this.#chunkBytes;
    const from = Math.max(chunkStart, offset);
    const to = Math.min(chunkStart + this.#chunkBytes, offset + into.length);
    const piece = into.subarray(from - offset, to - offset);
    if (state === CHUNK_NEW) return this.#pread(this.#origin, piece, from);
    if (state === CHUNK_STORED) {
      return this.#pread(this.#storage, piece, this.#offsets[index] + (from - chunkStart));
    }
    return false;
  }

  /** False when the read fails or ends early: the owner then reads, and reports or corrupts as it does. */
  #pread(fd: number, into: Uint8Array, at: number): boolean {
    for (let done = 0; done < into.length;) {
      const n = Number(
        this.#libc.pread(fd, into.subarray(done), BigInt(into.length - done), BigInt(at + done)),
      );
      if (n <= 0) return false;
      done += n;
    }
    return true;
  }
}
