/**
 * The names the OpenAPI document gives the API's object schemas: each is
 * listed once under its name in `components.schemas` and referenced where
 * it is used, so generated clients get named types (`DeviceInfo`, not an
 * anonymous object per route). Schemas are matched by identity: a schema's
 * `jsonSchema()` is the same object wherever it is used (as a body, a
 * response, an array's items or another object's property).
 *
 * @module
 */

import {
  addDeviceBody,
  attachBody,
  cbtInfo,
  createSnapshotBody,
  deviceInfo,
  imageChanges,
  imageLocator,
  markDirtyBody,
  problem,
  sectorRange,
  snapshotEvent,
  snapshotImageInfo,
  snapshotInfo,
  versionInfo,
} from "./models.ts";
import { healthStatus, readyStatus } from "./routes/health.ts";
import type { JsonSchema } from "./schema.ts";

/** Component names by schema object. */
export const componentNames: ReadonlyMap<JsonSchema, string> = new Map<JsonSchema, string>([
  [attachBody.jsonSchema(), "AttachRequest"],
  [addDeviceBody.jsonSchema(), "AddDeviceRequest"],
  [createSnapshotBody.jsonSchema(), "CreateSnapshotRequest"],
  [createSnapshotBody.shape.diffStorage.jsonSchema(), "DiffStorageRequest"],
  [markDirtyBody.jsonSchema(), "MarkDirtyRequest"],
  [sectorRange.jsonSchema(), "SectorRange"],
  [deviceInfo.jsonSchema(), "DeviceInfo"],
  [cbtInfo.jsonSchema(), "CbtInfo"],
  [snapshotInfo.jsonSchema(), "SnapshotInfo"],
  [snapshotInfo.shape.storage.jsonSchema(), "DiffStorageInfo"],
  [snapshotImageInfo.jsonSchema(), "SnapshotImageInfo"],
  [snapshotEvent.jsonSchema(), "SnapshotEvent"],
  [versionInfo.jsonSchema(), "VersionInfo"],
  [imageLocator.jsonSchema(), "ImageLocator"],
  [imageChanges.jsonSchema(), "ImageChanges"],
  [imageChanges.shape.extents.jsonSchema().items as JsonSchema, "Extent"],
  [problem.jsonSchema(), "Problem"],
  [healthStatus.jsonSchema(), "HealthStatus"],
  [readyStatus.jsonSchema(), "ReadyStatus"],
]);
