/**
 * How an API route is declared: one object gives the method, the path, the
 * schemas that validate its path parameters, query and body, its documented
 * responses and its handler. The app registers routes from these objects and
 * the OpenAPI document is generated from the very same objects.
 *
 * @module
 */

import type { Context } from "hono";
import type { SnapshotDriver } from "../driver.ts";
import type { Metrics } from "./metrics.ts";
import type { PathPolicy } from "./path_policy.ts";
import type { Infer, JsonSchema, Schema } from "./schema.ts";

/** What every handler can reach besides its validated input. */
export interface ApiServices {
  /** The backend. */
  driver: SnapshotDriver;
  /** Checks device and storage paths. */
  paths: PathPolicy;
  /** API metrics. */
  metrics: Metrics;
  /** The service's own version. */
  serviceVersion: string;
}

/** A documented response of a route. */
export interface ResponseSpec {
  /** What the response means. */
  description: string;
  /** Media type (default application/json when a schema is given). */
  contentType?: string;
  /** JSON Schema of the body. */
  schema?: JsonSchema;
}

/** The validated input and the services a handler receives. */
export interface HandlerInput<P, Q, B> {
  /** Path parameters. */
  params: P;
  /** Query parameters. */
  query: Q;
  /** Request body. */
  body: B;
  /** Services. */
  services: ApiServices;
  /** The Hono context (headers, streaming). */
  c: Context;
}

/** One route of the API. */
export interface RouteSpec<P = unknown, Q = unknown, B = unknown> {
  /** HTTP method. */
  method: "get" | "post" | "delete";
  /** Path in OpenAPI form, e.g. `/v1/devices/{id}`. */
  path: string;
  /** Unique operation id (also the metrics label). */
  operationId: string;
  /** One-line summary. */
  summary: string;
  /** OpenAPI tag. */
  tag: string;
  /** Schema of the path parameters. */
  params?: Schema<P>;
  /** Schema of the query parameters. */
  query?: Schema<Q>;
  /** Schema of the JSON body. */
  body?: Schema<B>;
  /** The body may be left out (then `body` is undefined). */
  bodyOptional?: boolean;
  /** Documented responses by status. */
  responses: Record<number, ResponseSpec>;
  /** Produces the response from validated input. */
  handle(input: HandlerInput<P, Q, B>): Promise<Response> | Response;
}

/** Declares a route with its input types inferred from its schemas. */
export function defineRoute<
  PS extends Schema<unknown> | undefined = undefined,
  QS extends Schema<unknown> | undefined = undefined,
  BS extends Schema<unknown> | undefined = undefined,
>(
  spec: Omit<RouteSpec<Infer<PS>, Infer<QS>, Infer<BS>>, "params" | "query" | "body"> & {
    params?: PS;
    query?: QS;
    body?: BS;
  },
): RouteSpec {
  return spec as unknown as RouteSpec;
}
