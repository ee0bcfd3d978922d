/**
 * Snapshot routes: create, add a device, take, list, show, destroy.
 *
 * @module
 */

import {
  addDeviceBody,
  createSnapshotBody,
  snapshotInfo,
  snapshotParams,
  takeBody,
} from "../models.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { array } from "../schema.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

/** /v1/snapshots routes. */
export const snapshotRoutes: RouteSpec[] = [
  defineRoute({
    method: "post",
    path: "/v1/snapshots",
    operationId: "createSnapshot",
    summary: "Create a snapshot of attached devices with a difference storage",
    tag: "snapshots",
    body: createSnapshotBody,
    responses: {
      201: { description: "Created", schema: snapshotInfo.jsonSchema() },
      ...commonErrors,
      400: problemSpec("Invalid input (the problem names the field), or the storage is a member."),
      403: problemSpec("The storage path is outside the allowed prefixes."),
      404: problemSpec("A device is not attached, or the storage's folder does not exist."),
      409: problemSpec(
        "A device is already in a snapshot, or the storage is an attached device, another " +
          "snapshot's storage, a file of the service's state, or an existing non-empty file " +
          "(without overwrite).",
      ),
      507: problemSpec("The storage is already larger than the limit."),
    },
    async handle({ body, services }) {
      const check = { field: "diffStorage.path", purpose: "use as difference storage" };
      const path = await services.paths.resolve(body.diffStorage.path, {
        ...check,
        mustExist: false,
      });
      const { limitBytes, overwrite } = body.diffStorage;
      const snapshot = await services.driver.createSnapshot({
        deviceIds: body.devices,
        diffStorage: { path, limitBytes, ...(overwrite ? { overwrite } : {}) },
        writable: body.writable,
        verifyOpened: services.paths.verifier(body.diffStorage.path, check),
      });
      return json(snapshot, 201, { location: `/v1/snapshots/${snapshot.id}` });
    },
  }),
  defineRoute({
    method: "post",
    path: "/v1/snapshots/{id}/devices",
    operationId: "addSnapshotDevice",
    summary: "Add an attached device to a snapshot that is not taken yet",
    tag: "snapshots",
    params: snapshotParams,
    body: addDeviceBody,
    responses: {
      200: { description: "Snapshot", schema: snapshotInfo.jsonSchema() },
      ...commonErrors,
      404: problemSpec("No such snapshot or device."),
      409: problemSpec("Taken already, or the device is in a snapshot."),
    },
    async handle({ params, body, services }) {
      return json(await services.driver.addDevice(params.id, body.device));
    },
  }),
  defineRoute({
    method: "post",
    path: "/v1/snapshots/{id}/take",
    operationId: "takeSnapshot",
    summary:
      "Take the snapshot, atomically across its devices, freezing their mounted file systems (unless freeze: false) between the take hooks",
    tag: "snapshots",
    params: snapshotParams,
    body: takeBody,
    bodyOptional: true,
    responses: {
      200: { description: "Taken", schema: snapshotInfo.jsonSchema() },
      ...commonErrors,
      404: problemSpec("No such snapshot."),
      409: problemSpec("Taken already."),
      424: problemSpec("A pre-take hook failed: nothing was frozen or taken."),
    },
    async handle({ params, body, services }) {
      return json(await services.driver.takeSnapshot(params.id, { freeze: body?.freeze }));
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/snapshots",
    operationId: "listSnapshots",
    summary: "List snapshots",
    tag: "snapshots",
    responses: {
      200: { description: "Snapshots", schema: array(snapshotInfo).jsonSchema() },
      ...commonErrors,
    },
    async handle({ services }) {
      return json(await services.driver.listSnapshots());
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}",
    operationId: "getSnapshot",
    summary: "Show a snapshot: state, per-device image and error, storage usage",
    tag: "snapshots",
    params: snapshotParams,
    responses: {
      200: { description: "Snapshot", schema: snapshotInfo.jsonSchema() },
      ...commonErrors,
      404: problemSpec("No such snapshot."),
    },
    async handle({ params, services }) {
      return json(await services.driver.snapshotInfo(params.id));
    },
  }),
  defineRoute({
    method: "delete",
    path: "/v1/snapshots/{id}",
    operationId: "destroySnapshot",
    summary: "Destroy a snapshot and its images (devices stay attached)",
    tag: "snapshots",
    params: snapshotParams,
    responses: {
      204: { description: "Destroyed" },
      ...commonErrors,
      404: problemSpec("No such snapshot."),
    },
    async handle({ params, services }) {
      await services.driver.destroySnapshot(params.id);
      return new Response(null, { status: 204 });
    },
  }),
];
