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

const ACCEPT_RANGES = { description: "bytes", schema: { type: "string" } };
const CONTENT_LENGTH = { description: "Bytes in the body.", schema: { type: "integer" } };
const ETAG = {
  description: "The image's entity tag (If-Match, If-None-Match, If-Range).",
  schema: { type: "string" },
};
const LAST_MODIFIED = { description: "The take time.", schema: { type: "string" } };

/** /v1/snapshots/{id}/images routes. */
export const imageRoutes: RouteSpec[] = [
  defineRoute({
    method: "get",
    path: "/v1/snapshots/{id}/images/{device}",
    operationId: "getImage",
    summary:
      "Where a device's image is (its nbd:// URI, or a /dev path without NBD; the kernel image's /dev path), its size and change token",
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
        ...(image.imageDevicePath ? { imageDevicePath: image.imageDevicePath } : {}),
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
    headers: [
      {
        name: "Range",
        description:
          "Up to 256 byte ranges, `bytes=FIRST-[LAST]` or `bytes=-SUFFIX`, comma-separated.",
      },
      { name: "If-Range", description: "Honour Range only if the ETag or date still matches." },
      { name: "If-Match", description: "412 unless the image's ETag is one of these." },
      { name: "If-None-Match", description: "304 when the image's ETag is one of these." },
      { name: "If-Modified-Since", description: "304 when the image is not newer." },
      { name: "If-Unmodified-Since", description: "412 when the image is newer." },
    ],
    responses: {
      200: {
        description: "The whole image",
        contentType: "application/octet-stream",
        headers: {
          "Accept-Ranges": ACCEPT_RANGES,
          "Content-Length": CONTENT_LENGTH,
          ETag: ETAG,
          "Last-Modified": LAST_MODIFIED,
        },
      },
      206: {
        description: "The requested range, or several as multipart/byteranges",
        contentType: "application/octet-stream",
        headers: {
          "Content-Range": {
            description: "bytes FIRST-LAST/SIZE (one range)",
            schema: { type: "string" },
          },
          "Accept-Ranges": ACCEPT_RANGES,
          "Content-Length": CONTENT_LENGTH,
          ETag: ETAG,
          "Last-Modified": LAST_MODIFIED,
        },
      },
      304: {
        description: "If-None-Match or If-Modified-Since: the image has not changed",
        headers: { ETag: ETAG },
      },
      ...commonErrors,
      404: problemSpec("No such snapshot or device in it."),
      409: problemSpec("The snapshot is not taken yet, or corrupted."),
      412: problemSpec("If-Match or If-Unmodified-Since does not hold."),
      416: {
        ...problemSpec("No range is within the image, or more than 256 ranges."),
        headers: {
          "Content-Range": { description: "bytes */SIZE", schema: { type: "string" } },
        },
      },
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
