/**
 * Probes for supervisors and load balancers, answered without a token (a
 * probe has none) and outside /v1 (they are about the process, not the API):
 * `GET /healthz` says the process serves requests; `GET /readyz` says the
 * backend is usable: the driver answers its version (for the kernel
 * backend, the module's control device answers) and lists its devices (its
 * state is loaded). Neither reveals anything a token guards.
 *
 * @module
 */

import { ServiceError } from "../../errors.ts";
import { literal, object, string } from "../schema.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { json, problemSpec } from "./common.ts";

/** Body of GET /healthz. */
export const healthStatus = object({ status: literal(["ok"]) });

/** Body of GET /readyz. */
export const readyStatus = object({
  status: literal(["ready"]),
  backend: literal(["kernel", "userspace"]),
  service: string({ description: "The service's version." }),
});

/** GET /healthz and GET /readyz (public: registered before authentication). */
export const healthRoutes: RouteSpec[] = [
  defineRoute({
    method: "get",
    path: "/healthz",
    operationId: "getHealth",
    summary: "Liveness: the process serves requests (no token needed)",
    tag: "service",
    public: true,
    responses: {
      200: { description: "Alive", schema: healthStatus.jsonSchema() },
    },
    handle: () => json({ status: "ok" }),
  }),
  defineRoute({
    method: "get",
    path: "/readyz",
    operationId: "getReadiness",
    summary: "Readiness: the backend answers and its state is loaded (no token needed)",
    tag: "service",
    public: true,
    responses: {
      200: { description: "Ready", schema: readyStatus.jsonSchema() },
      503: problemSpec("The backend does not answer (module gone, state not loaded)."),
    },
    async handle({ services }) {
      try {
        const version = await services.driver.version();
        await services.driver.listDevices();
        return json({
          status: "ready",
          backend: version.backend,
          service: services.serviceVersion,
        });
      } catch (error) {
        throw new ServiceError(
          "UNAVAILABLE",
          `The backend is not usable: ${(error as Error).message}`,
          { cause: error },
        );
      }
    },
  }),
];
