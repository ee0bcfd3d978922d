/**
 * Snapshot event routes: a long poll that returns the next event (or 204 on
 * timeout), and the same events as Server-Sent Events. Events are consumed
 * once, as from the kernel's event queue: each goes to whichever waiter
 * takes it first.
 *
 * Lost clients never lose events: see event_relay.ts.
 *
 * @module
 */

import { streamSSE } from "hono/streaming";
import { isServiceError } from "../../errors.ts";
import { snapshotEvent, snapshotParams, waitEventQuery } from "../models.ts";
import { problemFor } from "../problem.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

const DEFAULT_WAIT_MS = 30_000;
const STREAM_POLL_MS = 15_000;

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
      const event = await services.events.next(params.id, query.timeoutMs ?? DEFAULT_WAIT_MS);
      if (!event) return new Response(null, { status: 204 });
      if (signal.aborted) {
        services.events.passOn(params.id, event);
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
            const event = await services.events.next(params.id, STREAM_POLL_MS);
            if (stream.aborted || signal.aborted) {
              if (event) services.events.passOn(params.id, event);
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
