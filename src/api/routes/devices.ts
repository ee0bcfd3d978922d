/**
 * Device routes: attach (start tracking), list, show, detach.
 *
 * @module
 */

import { attachBody, deviceInfo, deviceParams } from "../models.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { array } from "../schema.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

/** /v1/devices routes. */
export const deviceRoutes: RouteSpec[] = [
  defineRoute({
    method: "post",
    path: "/v1/devices",
    operationId: "attachDevice",
    summary: "Attach a device (start change tracking)",
    tag: "devices",
    body: attachBody,
    responses: {
      201: { description: "Attached", schema: deviceInfo.jsonSchema() },
      ...commonErrors,
      403: problemSpec("The path is outside the allowed prefixes."),
      404: problemSpec("The path does not exist."),
      409: problemSpec(
        "The device or name is already attached, or the path is a difference storage or a " +
          "file of the service's state.",
      ),
    },
    async handle({ body, services }) {
      const check = { field: "path", purpose: "attach" };
      const path = await services.paths.resolve(body.path, { ...check, mustExist: true });
      const device = await services.driver.attach(path, {
        name: body.name,
        verifyOpened: services.paths.verifier(body.path, check),
      });
      return json(device, 201, { location: `/v1/devices/${device.id}` });
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/devices",
    operationId: "listDevices",
    summary: "List attached devices",
    tag: "devices",
    responses: {
      200: { description: "Devices", schema: array(deviceInfo).jsonSchema() },
      ...commonErrors,
    },
    async handle({ services }) {
      return json(await services.driver.listDevices());
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/devices/{id}",
    operationId: "getDevice",
    summary: "Show an attached device",
    tag: "devices",
    params: deviceParams,
    responses: {
      200: { description: "Device", schema: deviceInfo.jsonSchema() },
      ...commonErrors,
      404: problemSpec("No such device."),
    },
    async handle({ params, services }) {
      return json(await services.driver.getDevice(params.id));
    },
  }),
  defineRoute({
    method: "delete",
    path: "/v1/devices/{id}",
    operationId: "detachDevice",
    summary: "Detach a device (stop tracking, drop its CBT)",
    tag: "devices",
    params: deviceParams,
    responses: {
      204: { description: "Detached" },
      ...commonErrors,
      404: problemSpec("No such device."),
      409: problemSpec("The device is in a snapshot."),
    },
    async handle({ params, services }) {
      await services.driver.detach(params.id);
      return new Response(null, { status: 204 });
    },
  }),
];
