/**
 * Read probes: "tell me which export gets a READ of exactly this offset and
 * length". The userspace backend arms one to learn which export a host
 * /dev/nbdX is connected to (src/consistency/nbd_read_probe.ts reads one
 * block of the device and waits for that READ here).
 *
 * Design note: the board lives in one SharedArrayBuffer so that every plane
 * serving NBD sees the same probes, the main thread and Workers alike (a
 * Worker gets the buffer and builds its own {@link ReadProbeBoard} over it).
 * Layout: an Int32 count of armed slots, then {@link SLOTS} slots of
 * `state` (Int32: free, armed, claimed, hit), `offset` and `length`
 * (Float64: exact below 2^53) and the export name (UTF-8, at most
 * {@link NAME_BYTES}, with its length). {@link ReadProbeBoard.observe} is
 * called for every READ: with nothing armed it costs one atomic load; else it
 * compares the slots and, on a match, claims the slot (armed to claimed by
 * compare-and-exchange, so only the first READ counts), writes the name and
 * marks it hit (claimed to hit, again by compare-and-exchange: a slot its
 * owner freed meanwhile stays free). The owner of the probe polls its slot
 * until hit or its window ends, then frees it. A probe never changes what a READ does.
 *
 * @module
 */

/** How many probes can be armed at once. */
export const SLOTS = 16;
/** Longest export name a hit records (NBD names are at most 4096 bytes). */
export const NAME_BYTES = 4096;

const FREE = 0;
const ARMED = 1;
const CLAIMED = 2;
const HIT = 3;
const POLL_MS = 5;

const HEADER_BYTES = 8;
const SLOT_BYTES = 24 + 8 + NAME_BYTES;
const BOARD_BYTES = HEADER_BYTES + SLOTS * SLOT_BYTES;

/** Where a probe is waited for: one READ of `length` bytes at `offset`. */
export interface ReadProbe {
  /** Byte offset of the READ. */
  offset: number;
  /** Byte length of the READ. */
  length: number;
}

/** Probes armed by the owner and observed by every NBD transmission (see the module's note). */
export class ReadProbeBoard {
  /** The shared memory, for a Worker to build its own board over. */
  readonly buffer: SharedArrayBuffer;
  readonly #count: Int32Array;
  readonly #states: Int32Array;
  readonly #numbers: Float64Array;
  readonly #names: Uint8Array;

  /** A new empty board, or one over the `buffer` of another (in a Worker). */
  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(BOARD_BYTES)) {
    if (buffer.byteLength !== BOARD_BYTES) {
      throw new RangeError(`a read probe board is ${BOARD_BYTES} bytes, got ${buffer.byteLength}`);
    }
    this.buffer = buffer;
    this.#count = new Int32Array(buffer, 0, 1);
    this.#states = new Int32Array(buffer, HEADER_BYTES, SLOTS * (SLOT_BYTES / 4));
    this.#numbers = new Float64Array(buffer, HEADER_BYTES, SLOTS * (SLOT_BYTES / 8));
    this.#names = new Uint8Array(buffer, HEADER_BYTES, SLOTS * SLOT_BYTES);
  }

  /** Records a READ of export `name`; nearly free when nothing is armed. */
  observe(name: string, offset: number, length: number): void {
    if (Atomics.load(this.#count, 0) === 0) return;
    for (let slot = 0; slot < SLOTS; slot++) {
      const state = slot * (SLOT_BYTES / 4);
      const numbers = slot * (SLOT_BYTES / 8);
      if (Atomics.load(this.#states, state) !== ARMED) continue;
      if (this.#numbers[numbers + 1] !== offset || this.#numbers[numbers + 2] !== length) continue;
      if (Atomics.compareExchange(this.#states, state, ARMED, CLAIMED) !== ARMED) continue;
      const bytes = new TextEncoder().encode(name).subarray(0, NAME_BYTES);
      this.#names.set(bytes, slot * SLOT_BYTES + 32);
      this.#states[state + 6] = bytes.length;
      Atomics.compareExchange(this.#states, state, CLAIMED, HIT);
      return;
    }
  }

  /**
   * Arms `probe`, runs `trigger` (which should cause that READ), and resolves
   * with the name of the export that got it first, or undefined when none
   * did within `windowMs` (or every slot is busy, or the same probe is armed
   * already: one READ must not answer two probes). A rejecting trigger ends
   * the probe at once with its error.
   */
  async watch(
    probe: ReadProbe,
    trigger: () => Promise<void>,
    options: { windowMs: number },
  ): Promise<string | undefined> {
    const slot = this.#claimFree(probe);
    if (slot === undefined) return undefined;
    const state = slot * (SLOT_BYTES / 4);
    let failure: { error: unknown } | undefined;
    trigger().catch((error) => failure = { error });
    try {
      const until = performance.now() + options.windowMs;
      while (Atomics.load(this.#states, state) !== HIT) {
        if (failure) throw failure.error;
        if (performance.now() >= until) return undefined;
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
      const at = slot * SLOT_BYTES + 32;
      return new TextDecoder().decode(this.#names.slice(at, at + this.#states[state + 6]));
    } finally {
      Atomics.store(this.#states, state, FREE);
      Atomics.sub(this.#count, 0, 1);
    }
  }

  /** Takes a free slot for `probe` and arms it; undefined when all are busy or it is armed. */
  #claimFree(probe: ReadProbe): number | undefined {
    for (let slot = 0; slot < SLOTS; slot++) {
      const numbers = slot * (SLOT_BYTES / 8);
      if (
        this.#states[slot * (SLOT_BYTES / 4)] !== FREE &&
        this.#numbers[numbers + 1] === probe.offset && this.#numbers[numbers + 2] === probe.length
      ) return undefined;
    }
    for (let slot = 0; slot < SLOTS; slot++) {
      const state = slot * (SLOT_BYTES / 4);
      if (this.#states[state] !== FREE) continue;
      const numbers = slot * (SLOT_BYTES / 8);
      this.#numbers[numbers + 1] = probe.offset;
      this.#numbers[numbers + 2] = probe.length;
      Atomics.add(this.#count, 0, 1);
      Atomics.store(this.#states, state, ARMED);
      return slot;
    }
    return undefined;
  }
}
