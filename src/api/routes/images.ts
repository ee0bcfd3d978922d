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
import { problemResponse } from "../problem.ts";
import { parseRange } from "../range.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

const READ_PIECE_BYTES = 1 << 20;

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

/** A stream of `length` image bytes from `offset`, whose first piece is already read. */
function imageStream(
  read: (offset: number, into: Uint8Array) => Promise<void>,
  first: Uint8Array,
  offset: number,
  length: number,
): ReadableStream<Uint8Array> {
  let position = offset + first.length;
  const end = offset + length;
  let pending: Uint8Array | undefined = first;
  return new ReadableStream({
    async pull(controller) {
      if (pending) {
        controller.enqueue(pending);
        pending = undefined;
      } else if (position < end) {
        const piece = new Uint8Array(Math.min(READ_PIECE_BYTES, end - position));
        await read(position, piece);
        position += piece.length;
        controller.enqueue(piece);
      }
      if (!pending && position >= end) controller.close();
    },
  }, { highWaterMark: 2 });
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
    summary: "The image's bytes; honours a single Range (206, 416)",
    tag: "images",
    params: imageParams,
    responses: {
      200: { description: "The whole image", contentType: "application/octet-stream" },
      206: { description: "The requested range", contentType: "application/octet-stream" },
      ...commonErrors,
      404: problemSpec("No such snapshot or device in it."),
      409: problemSpec("The snapshot is not taken yet, or corrupted."),
      416: problemSpec("The range is beyond the image."),
    },
    async handle({ params, services, c }) {
      const { driver } = services;
      await takenImage(driver, params.id, params.device);
      const sizeBytes = await driver.imageSize(params.id, params.device);
      const request = parseRange(c.req.header("range") ?? null, sizeBytes);
      if (request.kind === "unsatisfiable") {
        return problemResponse(
          new ServiceError(
            "RANGE_NOT_SATISFIABLE",
            `The range ${c.req.header("range")} is beyond the image of ${sizeBytes} bytes`,
          ),
          c.req.path,
          { "content-range": `bytes */${sizeBytes}` },
        );
      }
      const { offset, length } = request.kind === "partial"
        ? request.range
        : { offset: 0, length: sizeBytes };
      const read = (at: number, into: Uint8Array) =>
        driver.readImage(params.id, params.device, at, into);
      const first = new Uint8Array(Math.min(READ_PIECE_BYTES, length));
      await read(offset, first);
      const headers: Record<string, string> = {
        "content-type": "application/octet-stream",
        "content-length": String(length),
        "accept-ranges": "bytes",
      };
      if (request.kind === "partial") {
        headers["content-range"] = `bytes ${offset}-${offset + length - 1}/${sizeBytes}`;
      }
      const body = length === 0 ? null : imageStream(read, first, offset, length);
      return new Response(body, { status: request.kind === "partial" ? 206 : 200, headers });
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
