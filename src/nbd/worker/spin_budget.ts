/**
 * How long a Worker that found its socket empty keeps trying before it
 * sleeps in poll(): adaptive busy polling.
 *
 * Design note. A client at queue depth 1 sends its next request a few tens
 * of microseconds after our reply; sleeping in poll() and being woken costs
 * two context switches per request, which on a virtual machine is most of a
 * 4 KiB request's time (measured: 16-17k IOPS sleeping at once, 31-41k
 * spinning up to 30 µs, nbdkit 24-26k on the same run). Spinning when the
 * next request does not come soon only burns a core that the client or
 * another connection needs, so the budget adapts: a spin that caught a
 * request doubles it (up to {@link SPIN_MAX_US}); one that did not halves it,
 * down to nothing; and a sleep that ended sooner than the most the budget
 * could be says that spinning would have paid, so it starts again at
 * {@link SPIN_MIN_US}. An idle connection thus costs one short spin, then
 * none.
 *
 * @module
 */

/** The longest spin, µs. */
export const SPIN_MAX_US = 50;
/** The spin a budget starts again from, µs. */
export const SPIN_MIN_US = 10;

/** The spin budget of one connection. */
export class SpinBudget {
  #us = SPIN_MAX_US;

  /** Microseconds to spin now (0: sleep at once). */
  get us(): number {
    return this.#us;
  }

  /** A spin caught data (`caught`) or ran out. */
  spun(caught: boolean): void {
    if (caught) this.#us = Math.min(SPIN_MAX_US, Math.max(SPIN_MIN_US, this.#us * 2));
    else this.#us = this.#us / 2 < SPIN_MIN_US / 2 ? 0 : this.#us / 2;
  }

  /** A sleep in poll() lasted `us` microseconds before data came. */
  slept(us: number): void {
    if (us < SPIN_MAX_US) this.#us = Math.max(this.#us, SPIN_MIN_US);
  }
}
