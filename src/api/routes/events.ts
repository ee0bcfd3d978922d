/**
 * Snapshot event routes. Each snapshot keeps an ordered log of its events
 * (the last EVENT_LOG_CAPACITY, with increasing ids) and every consumer
 * reads it: nobody takes an event from anybody.
 *
 * - `GET .../events?after=<id>&timeoutMs=`: a long poll answering 200 with
 *   the events after `id` as soon as there is at least one, or 200 with an
 *   empty list after `timeoutMs`; `lastId` is the `after` of the next call,
 *   and `truncated` says that some events after `id` are no longer held.
 * - `GET .../events/stream`: the same as Server-Sent Events, each with an
 *   `id:` line; a reconnect with `Last-Event-ID` (or `?after=`) resumes
 *   after that id, and a `truncated` event (without id) says when the log
 *   no longer holds some of the events after it.
 *
 * @module
 */

import { streamSSE } from "hono/streaming";
import { isServiceError, ServiceError } from "../../errors.ts";
import { eventPage, snapshotParams, streamEventsQuery, waitEventQuery } from "../models.ts";
import { problemFor } from "../problem.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

const DEFAULT_WAIT_MS = 30_000;
const STREAM_POLL_MS = 15_000;

/** The id a stream resumes after: `Last-Event-ID` first, then `?after=`, else 0. */
function resumeAfter(header: string | undefined, after: number | undefined): number {
  if (header === undefined || header === "") return after ?? 0;
  if (!/^\d{1,16}$/.test(header) || !Number.isSafeInteger(Number(header))) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Last-Event-ID must be an event id this service sent (an integer), got "${header}"`,
      { field: "Last-Event-ID" },
    );
  }
  return Number(header);
}

/** /v1/snapshots/{id}/events routes. */
export const eventRoutes: RouteSpec[] = [
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/events",
    operationId: "waitEvents",
    summary: "The snapshot's events after an id, waiting for at least one (long poll)",
    tag: "events",
    params: snapshotParams,
    query: waitEventQuery,
    responses: {
      200: {
        description: "The events after `after` (an empty list when none came within timeoutMs)",
        schema: eventPage.jsonSchema(),
      },
      ...commonErrors,
      404: problemSpec("No such snapshot, or it was destroyed while waiting."),
    },
    async handle({ params, query, services, c }) {
      // Deno reports a client that went away only on a signal taken before it left.
      const { signal } = c.req.raw;
      const page = await services.driver.waitEvents(params.id, {
        after: query.after,
        timeoutMs: query.timeoutMs ?? DEFAULT_WAIT_MS,
        signal,
      });
      for (const _ of page.events) services.metrics.recordEventDelivered();
      return json(page);
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/events/stream",
    operationId: "streamEvents",
    summary: "The snapshot's events as Server-Sent Events (event name = code, id = event id); " +
      "honours Last-Event-ID",
    tag: "events",
    params: snapshotParams,
    query: streamEventsQuery,
    responses: {
      200: {
        description: "An SSE stream of every event after Last-Event-ID (or `after`, default 0); " +
          "a `truncated` event when some are no longer held; an `end` event when the snapshot " +
          "goes away",
        contentType: "text/event-stream",
      },
      ...commonErrors,
      404: problemSpec("No such snapshot."),
    },
    async handle({ params, query, services, c }) {
      const { signal } = c.req.raw;
      let after = resumeAfter(c.req.header("last-event-id"), query.after);
      await services.driver.snapshotInfo(params.id);
      return streamSSE(c, async (stream) => {
        const gone = new AbortController();
        stream.onAbort(() => gone.abort());
        const stop = AbortSignal.any([signal, gone.signal]);
        // The first read answers at once: held events and a `truncated` notice come without delay.
        let timeoutMs = 0;
        while (!stream.aborted && !stream.closed && !stop.aborted) {
          try {
            const page = await services.driver.waitEvents(params.id, {
              after,
              timeoutMs,
              signal: stop,
            });
            timeoutMs = STREAM_POLL_MS;
            if (stream.aborted || stop.aborted) break;
            if (page.truncated) {
              await stream.writeSSE({
                event: "truncated",
                data: JSON.stringify({ after, resumedAt: page.events[0]?.id ?? page.lastId + 1 }),
              });
            }
            for (const event of page.events) {
              services.metrics.recordEventDelivered();
              await stream.writeSSE({
                event: event.code,
                id: String(event.id),
                data: JSON.stringify(event),
              });
            }
            if (page.events.length === 0 && !page.truncated) await stream.write(": keep-alive\n\n");
            after = Math.max(after, page.lastId);
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
