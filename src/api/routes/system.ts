/**
 * Routes about the service itself: version and capabilities, and metrics.
 * (The OpenAPI document is served by the app, which knows every route.)
 *
 * @module
 */

import { versionInfo } from "../models.ts";
import { METRICS_CONTENT_TYPE } from "../metrics.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { commonErrors, json } from "./common.ts";

/** GET /v1/version and GET /metrics. */
export const systemRoutes: RouteSpec[] = [
  defineRoute({
    method: "get",
    path: "/v1/version",
    operationId: "getVersion",
    summary: "Service version, backend kind, kernel profile and module version, capabilities",
    tag: "service",
    responses: {
      200: { description: "Version", schema: versionInfo.jsonSchema() },
      ...commonErrors,
    },
    async handle({ services }) {
      const version = await services.driver.version();
      return json({ service: services.serviceVersion, ...version });
    },
  }),
  defineRoute({
    method: "get",
    path: "/metrics",
    operationId: "getMetrics",
    summary: "Prometheus metrics",
    tag: "service",
    responses: {
      200: { description: "Metrics", contentType: METRICS_CONTENT_TYPE },
      ...commonErrors,
    },
    async handle({ services }) {
      const text = await services.metrics.render(services.driver);
      return new Response(text, { headers: { "content-type": METRICS_CONTENT_TYPE } });
    },
  }),
];
