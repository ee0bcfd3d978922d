/**
 * Image routes: where a device's image of a taken snapshot is (its locator
 * and change token), its bytes over HTTP with Range support, and the extents
 * changed since an earlier snapshot's change token (from the CBT) for
 * incremental backup, or 409 FULL_BACKUP_REQUIRED (see changes.ts).
 *
 * @module
 */

import { ServiceError } from "../../errors.ts";
import type { SnapshotDriver } from "../../driver.ts";
import { readChanges } from "../changes.ts";
import { changesQuery, imageChanges, imageLocator, imageParams } from "../models.ts";
import { imageDataResponse } from "../image_data.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

async function takenImage(driver: SnapshotDriver, snapshotId: string, deviceId: string) {
  const snapshot = await driver.snapshotInfo(snapshotId);
  const image = snapshot.devices.find((d) => d.deviceId === deviceId);
  if (!image) {
    throw new ServiceError("NOT_FOUND", `Snapshot ${snapshotId} has no device ${deviceId}`);
  }
  if (!image.locator) {
    throw new ServiceError(
      "CONFLICT",
      `Snapshot ${snapshotId} is not taken yet: device ${deviceId} has no image`,
    );
  }
  return image;
}

/** /v1/snapshots/{id}/images routes. */
export const imageRoutes: RouteSpec[] = [
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/images/{device}",
    operationId: "getImage",
    summary: "Where a device's image is (an nbd:// URI or a /dev path), its size and change token",
    tag: "images",
    params: imageParams,
    responses: {
      200: { description: "Locator", schema: imageLocator.jsonSchema() },
      ...commonErrors,
      404: problemSpec("No such snapshot or device in it."),
      409: problemSpec("The snapshot is not taken yet."),
    },
    async handle({ params, services }) {
      const image = await takenImage(services.driver, params.id, params.device);
      const sizeBytes = await services.driver.imageSize(params.id, params.device);
      return json({
        snapshotId: params.id,
        deviceId: params.device,
        locator: image.locator,
        sizeBytes,
        ...(image.changeToken ? { changeToken: image.changeToken } : {}),
        ...(image.previousChangeToken ? { previousChangeToken: image.previousChangeToken } : {}),
      });
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/images/{device}/data",
    operationId: "readImage",
    summary:
      "The image's bytes (GET or HEAD): Range with up to 256 ranges (206, multipart/byteranges for several, 416), ETag, If-Range, If-Match, If-None-Match",
    tag: "images",
    params: imageParams,
    responses: {
      200: { description: "The whole image", contentType: "application/octet-stream" },
      206: {
        description: "The requested range, or several as multipart/byteranges",
        contentType: "application/octet-stream",
      },
      304: { description: "If-None-Match or If-Modified-Since: the image has not changed" },
      ...commonErrors,
      404: problemSpec("No such snapshot or device in it."),
      409: problemSpec("The snapshot is not taken yet, or corrupted."),
      412: problemSpec("If-Match or If-Unmodified-Since does not hold."),
      416: problemSpec("No range is within the image, or more than 256 ranges."),
    },
    async handle({ params, services, c }) {
      await takenImage(services.driver, params.id, params.device);
      return await imageDataResponse(services.driver, {
        snapshotId: params.id,
        deviceId: params.device,
        request: c.req.raw,
        path: c.req.path,
      });
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/images/{device}/changes",
    operationId: "getImageChanges",
    summary: "Extents changed since an earlier snapshot's change token (default: the previous " +
      "snapshot), or 409 FULL_BACKUP_REQUIRED with a reason",
    tag: "images",
    params: imageParams,
    query: changesQuery,
    responses: {
      200: { description: "Changed extents", schema: imageChanges.jsonSchema() },
      ...commonErrors,
      404: problemSpec("No such snapshot or device in it."),
      409: problemSpec(
        "The snapshot is not taken yet (CONFLICT), or the changes cannot be answered " +
          "completely: FULL_BACKUP_REQUIRED with `reason` generation_changed, other_device, " +
          "not_earlier, malformed (also a bare number without a matching generation) or " +
          "cbt_corrupted.",
      ),
    },
    async handle({ params, query, services }) {
      const image = await takenImage(services.driver, params.id, params.device);
      const changes = await readChanges(services.driver, image, query);
      return json({ snapshotId: params.id, deviceId: params.device, ...changes });
    },
  }),
];
