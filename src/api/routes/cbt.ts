/**
 * Change block tracking routes: info, the read map as bytes, mark dirty.
 *
 * @module
 */

import { ServiceError } from "../../errors.ts";
import { cbtInfo, cbtMapQuery, deviceParams, markDirtyBody } from "../models.ts";
import { defineRoute, type RouteSpec } from "../route.ts";
import { commonErrors, json, problemSpec } from "./common.ts";

/** /v1/devices/{id}/cbt routes. */
export const cbtRoutes: RouteSpec[] = [
  defineRoute({
    method: "get",
    path: "/v1/devices/{id}/cbt",
    operationId: "getCbtInfo",
    summary: "CBT info: capacity, block size and count, generation, changes number",
    tag: "cbt",
    params: deviceParams,
    responses: {
      200: { description: "CBT info", schema: cbtInfo.jsonSchema() },
      ...commonErrors,
      404: problemSpec("No such device."),
    },
    async handle({ params, services }) {
      const info = await services.driver.cbtInfo(params.id);
      return json({
        capacityBytes: info.capacityBytes,
        blockSizeBytes: info.blockSizeBytes,
        blockCount: info.blockCount,
        generationId: info.generationId,
        changesNumber: info.changesNumber,
      });
    },
  }),
  defineRoute({
    method: "get",
    path: "/v1/devices/{id}/cbt/map",
    operationId: "readCbtMap",
    summary: "The CBT read map: one byte (change number) per block",
    tag: "cbt",
    params: deviceParams,
    query: cbtMapQuery,
    responses: {
      200: {
        description: "Map bytes: one per tracking block, the change number that last touched it",
        contentType: "application/octet-stream",
        headers: {
          "X-Cbt-Generation-Id": { description: "The CBT generation.", schema: { type: "string" } },
          "X-Cbt-Changes-Number": {
            description: "The changes number of the latest snapshot.",
            schema: { type: "integer" },
          },
          "X-Cbt-Block-Size": {
            description: "Tracking block size in bytes.",
            schema: { type: "integer" },
          },
        },
      },
      ...commonErrors,
      404: problemSpec("No such device."),
      400: problemSpec("Invalid input, or a block range beyond the map."),
    },
    async handle({ params, query, services }) {
      const info = await services.driver.cbtInfo(params.id);
      const offset = query.blockOffset ?? 0;
      if (offset > info.blockCount) {
        throw new ServiceError(
          "OUT_OF_RANGE",
          `blockOffset ${offset} is beyond the map of ${info.blockCount} blocks`,
          { field: "blockOffset" },
        );
      }
      const length = query.blockCount ?? info.blockCount - offset;
      if (offset + length > info.blockCount) {
        throw new ServiceError(
          "OUT_OF_RANGE",
          `blocks ${offset}..${offset + length} reach beyond the map of ${info.blockCount} blocks`,
          { field: "blockCount" },
        );
      }
      const map = await services.driver.readCbtMap(params.id, { offset, length });
      return new Response(map as Uint8Array<ArrayBuffer>, {
        headers: {
          "content-type": "application/octet-stream",
          "x-cbt-generation-id": info.generationId,
          "x-cbt-changes-number": String(info.changesNumber),
          "x-cbt-block-size": String(info.blockSizeBytes),
        },
      });
    },
  }),
  defineRoute({
    method: "post",
    path: "/v1/devices/{id}/cbt/dirty",
    operationId: "markDirty",
    summary: "Mark sector ranges dirty in both CBT tables",
    tag: "cbt",
    params: deviceParams,
    body: markDirtyBody,
    responses: {
      204: { description: "Marked" },
      ...commonErrors,
      404: problemSpec("No such device."),
    },
    async handle({ params, body, services }) {
      await services.driver.markDirty(
        params.id,
        body.ranges.map((r) => ({ offsetSectors: r.sectorOffset, countSectors: r.sectorCount })),
      );
      return new Response(null, { status: 204 });
    },
  }),
];
