/**
 * Hands snapshot events to the API's waiters without losing any. Events are
 * consumed once, as from the kernel's event queue; but the driver cannot
 * withdraw a waiter, so a long poll or a stream whose client went away still
 * takes the next event. Such an event is passed on here, per snapshot: to
 * the oldest request already waiting (whose own driver wait then passes on
 * what it gets later), or kept for the next request, which takes it before
 * asking the driver. Kept events are dropped with their snapshot.
 *
 * @module
 */

import type { SnapshotDriver, SnapshotEvent } from "../driver.ts";

/** A snapshot's events taken for clients that went away, and the waiters for it. */
interface Relay {
  /** Events no waiter has taken yet, oldest first. */
  kept: SnapshotEvent[];
  /** Waiters, oldest first; each returns false once it has its answer. */
  waiting: Array<(event: SnapshotEvent) => boolean>;
}

/** The API's one consumer of a driver's snapshot events. */
export class EventRelay {
  readonly #driver: SnapshotDriver;
  readonly #relays = new Map<string, Relay>();

  /** Relays the events of `driver`'s snapshots. */
  constructor(driver: SnapshotDriver) {
    this.#driver = driver;
  }

  #relayOf(snapshotId: string): Relay {
    let relay = this.#relays.get(snapshotId);
    if (!relay) this.#relays.set(snapshotId, relay = { kept: [], waiting: [] });
    return relay;
  }

  #forgetIfIdle(snapshotId: string, relay: Relay): void {
    if (relay.kept.length === 0 && relay.waiting.length === 0) this.#relays.delete(snapshotId);
  }

  /** Hands `event`, taken for a client that went away, to the oldest waiter, or keeps it. */
  passOn(snapshotId: string, event: SnapshotEvent): void {
    const relay = this.#relayOf(snapshotId);
    for (let take; (take = relay.waiting.shift());) {
      if (take(event)) return;
    }
    relay.kept.push(event);
  }

  /**
   * The snapshot's next event: a kept one first, else the driver's or one
   * passed on meanwhile, whichever comes first; undefined after `timeoutMs`.
   * NOT_FOUND once the snapshot is destroyed.
   */
  async next(snapshotId: string, timeoutMs: number): Promise<SnapshotEvent | undefined> {
    const kept = this.#relays.get(snapshotId);
    if (kept && kept.kept.length > 0) {
      try {
        await this.#driver.snapshotInfo(snapshotId);
      } catch (error) {
        this.#relays.delete(snapshotId);
        throw error;
      }
      const event = kept.kept.shift();
      this.#forgetIfIdle(snapshotId, kept);
      if (event) return event;
    }
    const relay = this.#relayOf(snapshotId);
    const answer = Promise.withResolvers<SnapshotEvent | undefined>();
    let answered = false;
    const take = (event: SnapshotEvent) => {
      if (answered) return false;
      answered = true;
      answer.resolve(event);
      return true;
    };
    relay.waiting.push(take);
    this.#driver.waitEvent(snapshotId, timeoutMs).then((event) => {
      if (!answered) {
        answered = true;
        answer.resolve(event);
      } else if (event) {
        this.passOn(snapshotId, event);
      }
    }, (error) => {
      if (!answered) {
        answered = true;
        answer.reject(error);
      }
    });
    try {
      return await answer.promise;
    } finally {
      const index = relay.waiting.indexOf(take);
      if (index >= 0) relay.waiting.splice(index, 1);
      this.#forgetIfIdle(snapshotId, relay);
    }
  }
}
