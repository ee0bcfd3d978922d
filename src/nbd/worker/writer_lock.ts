/**
 * One Worker at a time writes a device's file: a futex-style lock in the
 * device's write gate (WriteGate.WRITER: 0 free, 1 held, 2 held with
 * waiters), taken around each pwrite of a Worker's WRITE.
 *
 * Design note. ext4 (like most file systems) serialises buffered writes to
 * one file on its inode lock, and a writer that finds it held spins in the
 * kernel while the holder runs (rwsem_spin_on_owner): on cores shared with
 * the client, a spinning Worker takes the core the client needs to send.
 * Waiting here sleeps in futex instead. Measured, nbdcopy writes over four
 * connections on 2 cores, four interleaved rounds: 2.69-2.90 GiB/s and
 * 131-147 ticks of server CPU per 4 GiB with the lock, against
 * 2.56-2.64 GiB/s and 170-194 ticks without (over one connection the server
 * used 104 ticks). An uncontended lock costs one compare-exchange and one
 * exchange.
 *
 * The lock only orders writers for speed; correctness never depends on it.
 * So a wait is bounded (WRITER_WAIT_MS): past it the waiter takes the lock
 * over, so that a holder that never lets go (a Worker terminated
 * mid-write) costs one such wait, not one per write. A holder that was
 * only slow then writes beside the new one, which is all that it costs.
 * The owner's own writes do not take it.
 *
 * @module
 */

/** Slot of the lock in the write gate (engine WriteGate.WRITER). */
export const WRITER = 3;
/** Longest wait for the lock before taking it over. */
export const WRITER_WAIT_MS = 1000;

const FREE = 0;
const HELD = 1;
const CONTENDED = 2;

/**
 * Takes the writer lock of `gate`, waiting while another Worker holds it;
 * after WRITER_WAIT_MS it takes the lock over. Release it with
 * {@link unlockWriter}.
 */
export function lockWriter(gate: Int32Array<ArrayBufferLike>): void {
  if (Atomics.compareExchange(gate, WRITER, FREE, HELD) === FREE) return;
  const until = performance.now() + WRITER_WAIT_MS;
  while (Atomics.exchange(gate, WRITER, CONTENDED) !== FREE) {
    const left = until - performance.now();
    if (left <= 0) return;
    Atomics.wait(gate, WRITER, CONTENDED, left);
  }
}

/** Releases the writer lock of `gate` taken by {@link lockWriter}, waking one waiter if any. */
export function unlockWriter(gate: Int32Array<ArrayBufferLike>): void {
  if (Atomics.exchange(gate, WRITER, FREE) === CONTENDED) Atomics.notify(gate, WRITER, 1);
}
