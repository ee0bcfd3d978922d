/**
 * The event log of a snapshot: `corrupted` and `no_space` events with
 * increasing ids, kept for every consumer to read (nothing is taken out).
 *
 * Design note: a bounded ring (EVENT_LOG_CAPACITY by default); when it is
 * full the oldest event is dropped, and a reader asking for events after an
 * id older than what the log still holds is told so (`truncated`). Ids
 * count up from `firstId`, by default the log's creation time in ms times
 * 1000 plus 1: above every id of an earlier life of the service (unless it
 * gave out more than 1000 per ms it lived), so an id from before a restart
 * reads as truncated, never as "already seen". Readers wait with a timeout and an AbortSignal;
 * an aborted or timed-out wait answers with no events and takes nothing.
 * Closing the log answers every pending wait at once.
 *
 * @module
 */

import { ServiceError } from "./errors.ts";
import {
  type CorruptedEvent,
  EVENT_LOG_CAPACITY,
  type EventPage,
  type LoggedEvent,
  type NoSpaceEvent,
  type SnapshotEvent,
  type WaitEventsOptions,
} from "./driver.ts";

/** An event before it is stamped with its time. */
export type EventInput = Omit<CorruptedEvent, "timeMs"> | Omit<NoSpaceEvent, "timeMs">;

/** Raises an event on a snapshot's log (the log's owner stamps the time). */
export type EmitEvent = (event: EventInput) => void;

/** Options of an {@link EventLog}. */
export interface EventLogOptions {
  /** The most events kept (default EVENT_LOG_CAPACITY). */
  capacity?: number;
  /** The id of the first event (default: now in ms times 1000, plus 1). */
  firstId?: number;
}

/** A bounded, ordered log of snapshot events with waits after an id. */
export class EventLog {
  readonly #capacity: number;
  readonly #firstId: number;
  #events: LoggedEvent[] = [];
  #nextId: number;
  #dropped = 0;
  #wakers = new Set<() => void>();
  #closed = false;

  /** An empty log. */
  constructor(options: EventLogOptions = {}) {
    this.#capacity = Math.max(1, options.capacity ?? EVENT_LOG_CAPACITY);
    this.#firstId = options.firstId ?? Date.now() * 1000 + 1;
    this.#nextId = this.#firstId;
  }

  /** The newest id given out (firstId - 1 before the first event). */
  get lastId(): number {
    return this.#nextId - 1;
  }

  /** Events held now. */
  get size(): number {
    return this.#events.length;
  }

  /** Appends `event` with the next id and wakes the waits. Ignored once closed. */
  append(event: SnapshotEvent): LoggedEvent | undefined {
    if (this.#closed) return undefined;
    const logged = { ...event, id: this.#nextId++ } as LoggedEvent;
    this.#events.push(logged);
    if (this.#events.length > this.#capacity) {
      this.#events.shift();
      this.#dropped++;
    }
    this.#wake();
    return logged;
  }

  #wake(): void {
    const wakers = [...this.#wakers];
    this.#wakers.clear();
    for (const wake of wakers) wake();
  }

  /**
   * The events after `after`, at once. Truncated when some after `after`
   * are gone: dropped, or (for an `after` of 1 or more below the first id)
   * given out by an earlier life of the service; `after` 0 means "from the
   * start" and is truncated only when the log dropped events.
   */
  read(after: number): EventPage {
    const oldest = this.#events[0]?.id ?? this.#nextId;
    const events = this.#events.filter((event) => event.id > after);
    const truncated = after === 0 ? this.#dropped > 0 : after < oldest - 1;
    return { events, lastId: this.lastId, truncated };
  }

  /**
   * The events after `options.after` (default 0), waiting up to `timeoutMs`
   * for at least one; no events on timeout, abort or close.
   * INVALID_ARGUMENT for a negative or non-integer timeout or id.
   */
  async wait(options: WaitEventsOptions): Promise<EventPage> {
    const { timeoutMs, signal } = options;
    const after = options.after ?? 0;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot wait ${timeoutMs} ms for events: the timeout must be an integer of 0 or more`,
        { field: "timeoutMs" },
      );
    }
    if (!Number.isSafeInteger(after) || after < 0) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot read events after ${after}: an event id is an integer of 0 or more`,
        { field: "after" },
      );
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const page = this.read(after);
      const left = deadline - Date.now();
      if (page.events.length > 0 || this.#closed || signal?.aborted || left <= 0) return page;
      await this.#sleep(left, signal);
    }
  }

  /** Resolves at the next append, close, abort or after `ms`. */
  #sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wakers.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  /** Closes the log: pending waits answer at once, later appends are ignored. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }
}
