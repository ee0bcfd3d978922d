/**
 * Write preparations a Worker asks of the owner without waiting for them:
 * a SharedArrayBuffer of {@link PREPARE_ENTRIES} entries per Worker, beside
 * its request slot (owner_slot.ts). A WRITE that needs the owner first (a
 * chunk still NEW under a taken snapshot: copy-on-write; a mark that must be
 * durable first) waits for its own preparation while the Worker goes on
 * reading and serving the connection's other requests, so that a client
 * with many writes in flight has as many copies in flight as on the main
 * thread, not one.
 *
 * Design note. Each entry is a state word and its request: the Worker takes
 * a FREE entry, fills it, stores ASKED and rings the doorbell (an Int32 it
 * increments and notifies); the owner, waiting on the doorbell with
 * Atomics.waitAsync, marks the entries it finds ASKED as TAKEN, runs their
 * preparations concurrently, stores DONE or FAILED and signals the Worker's
 * message eventfd, which wakes a Worker blocked in poll(). The Worker
 * collects finished entries (FREE again) when its stream wakes or reads, and
 * every millisecond while it has some pending and its event loop runs (the
 * end of a connection, which waits for its requests). Only the Worker moves
 * an entry out of FREE and back to it, and only the owner out of ASKED and
 * TAKEN, so each word has one writer at a time. A FAILED preparation is made
 * again through the slot by the Worker, which then gets the owner's error
 * itself (preparing is idempotent: marks raise, copied chunks stay copied).
 *
 * Layout: Int32 DOORBELL at 0; entry i from byte 16 + 32 i: Int32 STATE,
 * HANDLE; Float64 OFFSET at +8, LENGTH at +16.
 *
 * @module
 */

/** Entries of a queue: preparations one Worker may have in flight. */
export const PREPARE_ENTRIES = 64;

const HEADER_BYTES = 16;
const ENTRY_BYTES = 32;
const DOORBELL = 0;
const FREE = 0;
const ASKED = 1;
const TAKEN = 2;
const DONE = 3;
const FAILED = 4;
const COLLECT_MS = 1;

/** A new queue's memory. */
export function newPrepareQueue(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_BYTES + PREPARE_ENTRIES * ENTRY_BYTES);
}

/** The entry's Int32 index of its state word (HANDLE follows it). */
function stateIndex(entry: number): number {
  return (HEADER_BYTES + entry * ENTRY_BYTES) / 4;
}

/** The entry's Float64 index of its offset (LENGTH follows it). */
function offsetIndex(entry: number): number {
  return (HEADER_BYTES + entry * ENTRY_BYTES + 8) / 8;
}

/** The Worker's end of a queue. */
export class PrepareClient {
  readonly #ints: Int32Array;
  readonly #numbers: Float64Array;
  readonly #free: number[] = [];
  readonly #waiting = new Map<number, (prepared: boolean) => void>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** The client of `buffer` (from {@link newPrepareQueue}). */
  constructor(buffer: SharedArrayBuffer) {
    this.#ints = new Int32Array(buffer);
    this.#numbers = new Float64Array(buffer);
    for (let entry = PREPARE_ENTRIES - 1; entry >= 0; entry--) this.#free.push(entry);
  }

  /** Preparations asked and not collected yet. */
  get pending(): number {
    return this.#waiting.size;
  }

  /**
   * Asks the owner to prepare `length` bytes at `offset` of the export of
   * `handle`; resolves true once prepared, false if the preparation failed
   * (make it again through the slot for its error). Undefined when every
   * entry is in use: ask through the slot.
   */
  ask(handle: number, offset: number, length: number): Promise<boolean> | undefined {
    const entry = this.#free.pop();
    if (entry === undefined) return undefined;
    const at = stateIndex(entry);
    this.#ints[at + 1] = handle;
    const number = offsetIndex(entry);
    this.#numbers[number] = offset;
    this.#numbers[number + 1] = length;
    const prepared = new Promise<boolean>((resolve) => this.#waiting.set(entry, resolve));
    Atomics.store(this.#ints, at, ASKED);
    Atomics.add(this.#ints, DOORBELL, 1);
    Atomics.notify(this.#ints, DOORBELL);
    this.#timer ??= setTimeout(() => this.#tick(), COLLECT_MS);
    return prepared;
  }

  /** Settles the preparations the owner finished; returns how many. */
  collect(): number {
    if (this.#waiting.size === 0) return 0;
    let settled = 0;
    for (const [entry, resolve] of this.#waiting) {
      const state = Atomics.load(this.#ints, stateIndex(entry));
      if (state !== DONE && state !== FAILED) continue;
      Atomics.store(this.#ints, stateIndex(entry), FREE);
      this.#waiting.delete(entry);
      this.#free.push(entry);
      resolve(state === DONE);
      settled++;
    }
    return settled;
  }

  #tick(): void {
    this.#timer = undefined;
    this.collect();
    if (this.#waiting.size > 0) this.#timer = setTimeout(() => this.#tick(), COLLECT_MS);
  }
}

/**
 * Serves `buffer`'s preparations with `prepare` (concurrently) until
 * `stop()` is true (checked whenever the doorbell rings); `finished()` is
 * called after each one settles (it wakes the Worker).
 */
export async function servePrepareQueue(
  buffer: SharedArrayBuffer,
  prepare: (handle: number, offset: number, length: number) => Promise<void>,
  finished: () => void,
  stop: () => boolean,
): Promise<void> {
  const ints = new Int32Array(buffer);
  const numbers = new Float64Array(buffer);
  const settle = (at: number, state: number) => {
    Atomics.store(ints, at, state);
    finished();
  };
  while (!stop()) {
    const rung = Atomics.load(ints, DOORBELL);
    for (let entry = 0; entry < PREPARE_ENTRIES; entry++) {
      const at = stateIndex(entry);
      if (Atomics.load(ints, at) !== ASKED) continue;
      Atomics.store(ints, at, TAKEN);
      const number = offsetIndex(entry);
      const [handle, offset, length] = [ints[at + 1], numbers[number], numbers[number + 1]];
      Promise.resolve().then(() => prepare(handle, offset, length)).then(
        () => settle(at, DONE),
        () => settle(at, FAILED),
      );
    }
    const wait = Atomics.waitAsync(ints, DOORBELL, rung);
    if (wait.async) await wait.value;
  }
}

/** True while some entry of `buffer` is not FREE: its Worker holds a write gate for it. */
export function preparesInFlight(buffer: SharedArrayBuffer): boolean {
  const ints = new Int32Array(buffer);
  for (let entry = 0; entry < PREPARE_ENTRIES; entry++) {
    if (Atomics.load(ints, stateIndex(entry)) !== FREE) return true;
  }
  return false;
}

/** Wakes {@link servePrepareQueue} so that it checks `stop()`. */
export function wakePrepareQueue(buffer: SharedArrayBuffer): void {
  Atomics.notify(new Int32Array(buffer), DOORBELL);
}
