/**
 * Snapshot event routes: a long poll that returns the next event (or 204 on
 * timeout), and the same events as Server-Sent Events. Events are consumed
 * once, as from the kernel's event queue: each goes to whichever waiter
 * takes it first.
 *
 * Design note: the driver cannot withdraw a waiter, so a long poll or a
 * stream whose client went away still takes the next event. Such an event
 * is passed on here, per driver and snapshot: to the oldest request already
 * waiting (whose own driver wait then passes on what it gets later), or
 * kept for the next request, which takes it before asking the driver. Kept
 * events are dropped with their snapshot.
 *
 * @module
 */

import { streamSSE } from "hono/streaming";
import type { SnapshotDriver, SnapshotEvent } from "../../driver.ts";
import { isServiceError } from "../../errors.ts";
import { snapshotEvent, snapshotParams, waitEventQuery } from "../models.ts";
import { problemFor } from "../problem.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

const DEFAULT_WAIT_MS = 30_000;
const STREAM_POLL_MS = 15_000;

/** A snapshot's events taken for clients that went away, and the API's waiters for it. */
interface Relay {
  /** Events no waiter has taken yet, oldest first. */
  kept: SnapshotEvent[];
  /** Waiters of this process, oldest first; each returns false once it has its answer. */
  waiting: Array<(event: SnapshotEvent) => boolean>;
}

const relays = new WeakMap<SnapshotDriver, Map<string, Relay>>();

function relayOf(driver: SnapshotDriver, snapshotId: string): Relay {
  let bySnapshot = relays.get(driver);
  if (!bySnapshot) relays.set(driver, bySnapshot = new Map());
  let relay = bySnapshot.get(snapshotId);
  if (!relay) bySnapshot.set(snapshotId, relay = { kept: [], waiting: [] });
  return relay;
}

function forgetIfIdle(driver: SnapshotDriver, snapshotId: string, relay: Relay): void {
  if (relay.kept.length === 0 && relay.waiting.length === 0) {
    relays.get(driver)?.delete(snapshotId);
  }
}

/** Hands `event`, taken for a client that went away, to the oldest waiter, or keeps it. */
function passOn(driver: SnapshotDriver, snapshotId: string, event: SnapshotEvent): void {
  const relay = relayOf(driver, snapshotId);
  for (let take; (take = relay.waiting.shift());) {
    if (take(event)) return;
  }
  relay.kept.push(event);
}

/**
 * The snapshot's next event: a kept one first, else the driver's or one
 * passed on meanwhile, whichever comes first (NOT_FOUND once destroyed).
 */
async function nextEvent(
  driver: SnapshotDriver,
  snapshotId: string,
  timeoutMs: number,
): Promise<SnapshotEvent | undefined> {
  const kept = relays.get(driver)?.get(snapshotId);
  if (kept && kept.kept.length > 0) {
    try {
      await driver.snapshotInfo(snapshotId);
    } catch (error) {
      relays.get(driver)?.delete(snapshotId);
      throw error;
    }
    const event = kept.kept.shift();
    forgetIfIdle(driver, snapshotId, kept);
    if (event) return event;
  }
  const relay = relayOf(driver, snapshotId);
  const answer = Promise.withResolvers<SnapshotEvent | undefined>();
  let answered = false;
  const take = (event: SnapshotEvent) => {
    if (answered) return false;
    answered = true;
    answer.resolve(event);
    return true;
  };
  relay.waiting.push(take);
  driver.waitEvent(snapshotId, timeoutMs).then((event) => {
    if (!answered) {
      answered = true;
      answer.resolve(event);
    } else if (event) {
      passOn(driver, snapshotId, event);
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
    forgetIfIdle(driver, snapshotId, relay);
  }
}

/** /v1/snapshots/{id}/events routes. */
export const eventRoutes: RouteSpec[] = [
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/events",
    operationId: "waitEvent",
    summary: "Wait for the snapshot's next event (long poll)",
    tag: "events",
    params: snapshotParams,
    query: waitEventQuery,
    responses: {
      200: { description: "The next event", schema: snapshotEvent.jsonSchema() },
      204: { description: "No event within timeoutMs" },
      ...commonErrors,
      404: problemSpec("No such snapshot."),
    },
    async handle({ params, query, services, c }) {
      // Deno reports a client that went away only on a signal taken before it left.
      const { signal } = c.req.raw;
      const event = await nextEvent(
        services.driver,
        params.id,
        query.timeoutMs ?? DEFAULT_WAIT_MS,
      );
      if (!event) return new Response(null, { status: 204 });
      if (signal.aborted) {
        passOn(services.driver, params.id, event);
        return new Response(null, { status: 204 });
      }
      services.metrics.recordEventDelivered();
      return json(event);
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/events/stream",
    operationId: "streamEvents",
    summary: "The snapshot's events as Server-Sent Events (event name = code)",
    tag: "events",
    params: snapshotParams,
    responses: {
      200: {
        description: "An SSE stream; ends with an `end` event when the snapshot goes away",
        contentType: "text/event-stream",
      },
      ...commonErrors,
      404: problemSpec("No such snapshot."),
    },
    async handle({ params, services, c }) {
      const { signal } = c.req.raw;
      await services.driver.snapshotInfo(params.id);
      return streamSSE(c, async (stream) => {
        let sequence = 0;
        while (!stream.aborted && !stream.closed) {
          try {
            const event = await nextEvent(services.driver, params.id, STREAM_POLL_MS);
            if (stream.aborted || signal.aborted) {
              if (event) passOn(services.driver, params.id, event);
              break;
            }
            if (event) {
              services.metrics.recordEventDelivered();
              await stream.writeSSE({
                event: event.code,
                id: String(++sequence),
                data: JSON.stringify(event),
              });
            } else {
              await stream.write(": keep-alive\n\n");
            }
          } catch (error) {
            if (!isServiceError(error)) throw error;
            await stream.writeSSE({ event: "end", data: JSON.stringify(problemFor(error)) });
            break;
          }
        }
      });
    },
  }),
];
