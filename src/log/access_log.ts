/**
 * The API's access log: one line per request with its id, method, path,
 * route, status and duration, and for an error response its problem code.
 * The request id is the caller's `X-Request-Id` when it is a sane token,
 * else a new UUID, and goes back in the response's `X-Request-Id`, so a
 * client's report and the log line can be matched.
 *
 * An error is logged once, on this line, with its problem code: refusals
 * (4xx) at info, the service's own conditions (507 storage exhausted, 503
 * unavailable) at warn, internal failures at error with the message and the
 * stack of the error the app handed over with {@link rememberError}. Probes and
 * scrapes (/healthz, /readyz, /metrics) log at debug.
 *
 * A streamed binary body (image data, the CBT map) that fails after the headers
 * went out (the snapshot was destroyed during a read) is logged once, at
 * warn with its code, instead of Deno's raw print of the error: a body with
 * a Content-Length then just ends short, which makes the server abort the
 * connection, so the client still sees the failure.
 *
 * @module
 */

import type { Context, MiddlewareHandler } from "hono";
import { PROBLEM_CONTENT_TYPE } from "../api/problem.ts";
import type { Logger } from "./logger.ts";

/** The request id header, both ways. */
export const REQUEST_ID_HEADER = "x-request-id";

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const QUIET_PATHS = new Set(["/healthz", "/readyz", "/metrics"]);
const errors = new WeakMap<Request, unknown>();

/** Hands the error behind a request's error response to the access log. */
export function rememberError(c: Context, error: unknown): void {
  errors.set(c.req.raw, error);
}

/** The request id of `c` (set by the access log middleware). */
export function requestIdOf(c: Context): string | undefined {
  return c.res.headers.get(REQUEST_ID_HEADER) ?? c.req.header(REQUEST_ID_HEADER);
}

async function problemCode(response: Response): Promise<string | undefined> {
  if (!response.headers.get("content-type")?.startsWith(PROBLEM_CONTENT_TYPE)) return undefined;
  try {
    const code = (await response.clone().json()).code;
    return typeof code === "string" ? code : undefined;
  } catch {
    return undefined;
  }
}

const STREAMED = /^application\/octet-stream/;

function guardBody(
  response: Response,
  onError: (error: unknown) => void,
): Response {
  const source = response.body;
  if (!source || !STREAMED.test(response.headers.get("content-type") ?? "")) return response;
  const sized = response.headers.has("content-length");
  const reader = source.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (error) {
        onError(error);
        if (sized) controller.close();
        else controller.error(error);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
  return new Response(body, response);
}

/** The middleware; `routeOf` names the matched route (the metrics label). */
export function accessLog(logger: Logger, routeOf: (c: Context) => string): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    const given = c.req.header(REQUEST_ID_HEADER);
    const requestId = given && SANE_REQUEST_ID.test(given) ? given : crypto.randomUUID();
    await next();
    try {
      c.res.headers.set(REQUEST_ID_HEADER, requestId);
    } catch {
      c.res = new Response(c.res.body, c.res);
      c.res.headers.set(REQUEST_ID_HEADER, requestId);
    }
    c.res = guardBody(c.res, (failure) => {
      logger.warn(`${c.req.method} ${c.req.path}: the response stream failed`, {
        requestId,
        route: routeOf(c),
        code: (failure as { code?: string })?.code ?? "INTERNAL",
        error: failure instanceof Error ? failure.message : String(failure),
      });
    });
    const status = c.res.status;
    const error = errors.get(c.req.raw);
    const code = status >= 400 ? await problemCode(c.res) : undefined;
    const internal = status >= 500 && (code === undefined || code === "INTERNAL");
    const level = internal
      ? "error"
      : status >= 500
      ? "warn"
      : QUIET_PATHS.has(c.req.path)
      ? "debug"
      : "info";
    if (!logger.enabled(level)) return;
    logger.log(level, `${c.req.method} ${c.req.path} ${status}`, {
      requestId,
      route: routeOf(c),
      durationMs: Math.round((performance.now() - started) * 10) / 10,
      code,
      error: internal && error instanceof Error ? error.message : undefined,
      stack: internal && error instanceof Error && error.name !== "ServiceError"
        ? error.stack
        : undefined,
    });
  };
}
