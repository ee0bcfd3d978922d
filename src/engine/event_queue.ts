/**
 * The event queue of a snapshot (the kernel keeps one per difference
 * storage): `corrupted` and `no_space` events wait here until a caller takes
 * them with {@link EventQueue.wait}.
 *
 * Design note: events are delivered once, in order; concurrent waiters are
 * served first come, first served. Closing the queue resolves every pending
 * waiter with `undefined` and clears their timers.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { CorruptedEvent, NoSpaceEvent, SnapshotEvent } from "../driver.ts";

/** An event before it is stamped with its time. */
export type EventInput = Omit<CorruptedEvent, "timeMs"> | Omit<NoSpaceEvent, "timeMs">;

/** Raises an event on a snapshot's queue (the queue's owner stamps the time). */
export type EmitEvent = (event: EventInput) => void;

interface Waiter {
  resolve: (event: SnapshotEvent | undefined) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A FIFO of snapshot events with timed waits. */
export class EventQueue {
  #events: SnapshotEvent[] = [];
  #waiters: Waiter[] = [];
  #closed = false;

  /** Events queued and not yet taken. */
  get pending(): number {
    return this.#events.length;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Queues `event`, or hands it to the oldest waiter. Ignored once closed. */
  push(event: SnapshotEvent): void {
    if (this.#closed) return;
    const waiter = this.#waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(event);
    } else {
      this.#events.push(event);
    }
  }

  /**
   * The next event, or `undefined` when none arrives within `timeoutMs`
   * milliseconds (0 polls) or the queue closes. INVALID_ARGUMENT for a
   * negative or non-finite timeout.
   */
  wait(timeoutMs: number): Promise<SnapshotEvent | undefined> {
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      return Promise.reject(
        new ServiceError(
          "INVALID_ARGUMENT",
          `Cannot wait ${timeoutMs} ms for an event: the timeout must be 0 or more`,
          { field: "timeoutMs" },
        ),
      );
    }
    const event = this.#events.shift();
    if (event || this.#closed || timeoutMs === 0) return Promise.resolve(event);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        resolve,
        timer: setTimeout(() => {
          const index = this.#waiters.indexOf(waiter);
          if (index >= 0) this.#waiters.splice(index, 1);
          resolve(undefined);
        }, timeoutMs),
      };
      this.#waiters.push(waiter);
    });
  }

  /** Closes the queue: pending waiters resolve with `undefined`, queued events are dropped. */
  close(): void {
    this.#closed = true;
    this.#events = [];
    for (const waiter of this.#waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.resolve(undefined);
    }
  }
}
