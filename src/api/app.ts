/**
 * The Hono application: registers every declared route with validation of
 * its path parameters, query and body, bearer authentication when a token is
 * set, a request body limit, metrics, and problem+json for every error.
 *
 * @module
 */

import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { SnapshotDriver } from "../driver.ts";
import { isServiceError, ServiceError } from "../errors.ts";
import { bearerAuth } from "./auth.ts";
import { Metrics } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";
import { PathPolicy } from "./path_policy.ts";
import { problemResponse } from "./problem.ts";
import type { ApiServices, RouteSpec } from "./route.ts";
import type { Schema } from "./schema.ts";
import { cbtRoutes } from "./routes/cbt.ts";
import { deviceRoutes } from "./routes/devices.ts";
import { eventRoutes } from "./routes/events.ts";
import { imageRoutes } from "./routes/images.ts";
import { snapshotRoutes } from "./routes/snapshots.ts";
import { systemRoutes } from "./routes/system.ts";
import { SERVICE_LICENSE, SERVICE_VERSION } from "../version.ts";
import { Logger } from "../log/logger.ts";
import { accessLog, rememberError } from "../log/access_log.ts";
import { healthRoutes } from "./routes/health.ts";
import { statusPage } from "./routes/ui.ts";

/**
 * Default request body limit: 5 MiB, so that a mark-dirty request with the
 * most ranges the schema allows (65536) fits even with the largest numbers
 * (about 66 bytes per `{"sectorOffset":…,"sectorCount":…}` range in compact
 * JSON, 4.3 MiB in all).
 */
export const DEFAULT_BODY_LIMIT_BYTES = 5 << 20;

/** Options of {@link createApp}. */
export interface AppOptions {
  /** Path prefixes under which device and storage paths must resolve. */
  paths: PathPolicy;
  /** When set, every request needs `Authorization: Bearer <token>` (trimmed; empty: RangeError). */
  token?: string;
  /** Request body limit in bytes (default {@link DEFAULT_BODY_LIMIT_BYTES}). */
  bodyLimitBytes?: number;
  /** Metrics registry (a new one when omitted). */
  metrics?: Metrics;
  /** The access log and internal errors go here (default: warnings and errors on stderr). */
  logger?: Logger;
}

/** Every route of the API, in documentation order. */
export const apiRoutes: RouteSpec[] = [
  ...systemRoutes,
  ...deviceRoutes,
  ...cbtRoutes,
  ...snapshotRoutes,
  ...eventRoutes,
  ...imageRoutes,
];

/** Every route the OpenAPI document describes: the public probes, then the API. */
export const documentedRoutes: RouteSpec[] = [...healthRoutes, ...apiRoutes];

/**
 * A body above this many characters is handled in steps (text, parse,
 * validate, act) with the event loop let run between them, so a large
 * request (65536 mark-dirty ranges) never blocks other I/O for the whole of it.
 */
const LARGE_BODY_CHARS = 64 << 10;

/** Lets pending I/O (NBD requests, other connections) run before going on. */
function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function honoPath(path: string): string {
  return path.replaceAll(/\{(\w+)\}/g, ":$1");
}

/** The request's JSON body; undefined when it is empty and `optional`. */
async function readJsonBody(request: Request, { optional = false } = {}): Promise<unknown> {
  const type = request.headers.get("content-type") ?? "";
  const text = await request.text();
  if (optional && text.trim() === "") return undefined;
  if (!/^application\/(.+\+)?json\b/i.test(type)) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `The request body must be JSON (Content-Type: application/json), got "${type || "none"}"`,
      { field: "body" },
    );
  }
  if (text.length > LARGE_BODY_CHARS) await yieldToIo();
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `The request body is not valid JSON: ${String(cause)}`,
      {
        field: "body",
        cause,
      },
    );
  }
}

/** Validates a request body; an error about the body as a whole names the field "body". */
function parseBody<T>(schema: Schema<T>, value: unknown): T {
  try {
    return schema.parse(value, "");
  } catch (error) {
    if (!isServiceError(error) || error.field !== undefined) throw error;
    throw new ServiceError(error.code, error.message, { field: "body", cause: error });
  }
}

/**
 * The API application: a fetch handler (what `Deno.serve` takes) and an
 * in-process caller (what tests use). Hono's app underneath.
 */
export interface ApiApp {
  /** Answers `request`. */
  fetch(request: Request, info?: Deno.ServeHandlerInfo): Response | Promise<Response>;
  /** Answers a request for `input` (a path like "/v1/devices", or a URL or Request). */
  request(input: string | URL | Request, init?: RequestInit): Response | Promise<Response>;
}

/** Builds the API application on `driver`. */
export function createApp(driver: SnapshotDriver, options: AppOptions): ApiApp {
  const metrics = options.metrics ?? new Metrics();
  const services: ApiServices = {
    driver,
    paths: options.paths,
    metrics,
    serviceVersion: SERVICE_VERSION,
  };
  const app = new Hono();
  const document = openApiDocument(documentedRoutes, {
    serviceVersion: SERVICE_VERSION,
    license: SERVICE_LICENSE,
  });

  app.onError((error, c) => {
    rememberError(c, error);
    return problemResponse(error, c.req.path);
  });
  app.notFound((c) =>
    problemResponse(
      new ServiceError("NOT_FOUND", `No route ${c.req.method} ${c.req.path}; see /v1/openapi.json`),
      c.req.path,
    )
  );
  const operations = new Map<string, string>([
    ...healthRoutes.map((r): [string, string] => [`GET ${r.path}`, r.operationId]),
    ["GET /v1/openapi.json", "getOpenApi"],
    ["GET /ui", "statusPageRedirect"],
    ["GET /ui/", "statusPage"],
    ...apiRoutes.map((
      r,
    ): [string, string] => [`${r.method.toUpperCase()} ${honoPath(r.path)}`, r.operationId]),
  ]);
  // HEAD is served by the GET route of the same path, and counted as it.
  const routeOf = (c: Context) =>
    operations.get(`${c.req.method === "HEAD" ? "GET" : c.req.method} ${c.req.routePath}`) ??
      "unmatched";
  app.use("*", accessLog(options.logger ?? new Logger({ level: "warn" }), routeOf));
  app.use("*", async (c, next) => {
    const started = performance.now();
    await next();
    const operation = routeOf(c);
    metrics.recordRequest(
      operation,
      c.req.method.toLowerCase(),
      c.res.status,
      (performance.now() - started) / 1000,
    );
  });
  for (const route of healthRoutes) {
    app.get(route.path, (c) => route.handle({ params: {}, query: {}, body: {}, services, c }));
  }
  app.route("/", statusPage); // the static page needs no token; the data it fetches does
  if (options.token !== undefined) app.use("*", bearerAuth(options.token));
  app.use(
    "*",
    bodyLimit({
      maxSize: options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES,
      onError: (c) =>
        problemResponse(
          new ServiceError(
            "PAYLOAD_TOO_LARGE",
            `The request body exceeds ${options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES} bytes`,
            { field: "body" },
          ),
          c.req.path,
        ),
    }),
  );

  app.get("/v1/openapi.json", (c) => c.json(document));
  for (const route of apiRoutes) {
    app.on(route.method.toUpperCase(), honoPath(route.path), async (c) => {
      const params = route.params ? route.params.parse(c.req.param(), "") : undefined;
      const query = route.query ? route.query.parse(c.req.query(), "") : undefined;
      let body;
      const json = route.body
        ? await readJsonBody(c.req.raw, { optional: route.bodyOptional })
        : undefined;
      if (route.body && json !== undefined) {
        const large = Number(c.req.header("content-length") ?? 0) > LARGE_BODY_CHARS;
        if (large) await yieldToIo();
        body = parseBody(route.body, json);
        if (large) await yieldToIo();
      }
      return await route.handle({ params, query, body, services, c });
    });
  }
  return app;
}
