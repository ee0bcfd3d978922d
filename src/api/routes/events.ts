/**
 * Snapshot event routes: a long poll that returns the next event (or 204 on
 * timeout), and the same events as Server-Sent Events. Events are consumed
 * once, as from the kernel's event queue: each goes to whichever waiter
 * takes it first.
 *
 * Design note: the driver cannot withdraw a waiter, so a long poll or a
 * stream whose client went away still takes the next event. Such an event
 * is kept here, per driver and snapshot, and handed to the next waiter
 * before the driver is asked again; it is dropped with its snapshot.
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

/** Events taken for clients that went away, by driver and snapshot id. */
const undelivered = new WeakMap<SnapshotDriver, Map<string, SnapshotEvent[]>>();

/** Keeps `event`, taken for a client that went away, for the snapshot's next waiter. */
function keepUndelivered(driver: SnapshotDriver, snapshotId: string, event: SnapshotEvent): void {
  let bySnapshot = undelivered.get(driver);
  if (!bySnapshot) undelivered.set(driver, bySnapshot = new Map());
  const kept = bySnapshot.get(snapshotId) ?? [];
  kept.push(event);
  bySnapshot.set(snapshotId, kept);
}

/** The snapshot's next event: a kept one first, else the driver's (NOT_FOUND once destroyed). */
async function nextEvent(
  driver: SnapshotDriver,
  snapshotId: string,
  timeoutMs: number,
): Promise<SnapshotEvent | undefined> {
  const bySnapshot = undelivered.get(driver);
  const kept = bySnapshot?.get(snapshotId);
  if (!kept) return await driver.waitEvent(snapshotId, timeoutMs);
  try {
    await driver.snapshotInfo(snapshotId);
  } catch (error) {
    bySnapshot!.delete(snapshotId);
    throw error;
  }
  const event = kept.shift()!;
  if (kept.length === 0) bySnapshot!.delete(snapshotId);
  return event;
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
        keepUndelivered(services.driver, params.id, event);
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
              if (event) keepUndelivered(services.driver, params.id, event);
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
