/**
 * The API's request and response shapes, declared with the schema language
 * so that requests are validated and every shape appears in the OpenAPI
 * document. Response schemas mirror the types of src/driver.ts.
 *
 * @module
 */

import {
  array,
  boolean,
  integer,
  literal,
  object,
  optional,
  type Schema,
  string,
} from "./schema.ts";

/** Device ids: names usable as NBD export names and in URLs, as both backends accept them. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
/** Snapshot ids: lower-case UUIDs. */
export const SNAPSHOT_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A device id. */
export const deviceId: Schema<string> = string({
  pattern: DEVICE_ID_PATTERN,
  maxLength: 64,
  description:
    "Device id (its name): letters, digits, '.', '_', ':' and '-', at most 64 characters.",
});
/** A snapshot id. */
export const snapshotId: Schema<string> = string({
  pattern: SNAPSHOT_ID_PATTERN,
  maxLength: 36,
  description: "Snapshot id (UUID).",
});

/** Path parameters `{id}` of a device. */
export const deviceParams = object({ id: deviceId });
/** Path parameters `{id}` of a snapshot. */
export const snapshotParams = object({ id: snapshotId });
/** Path parameters `{id}` and `{device}` of an image. */
export const imageParams = object({ id: snapshotId, device: deviceId });

/** Body of POST /v1/devices. */
export const attachBody = object({
  path: string({
    description: "Absolute path of the block device (or, userspace backend, regular file).",
  }),
  name: optional(deviceId),
});

/** Query of GET /v1/devices/{id}/cbt/map. */
export const cbtMapQuery = object({
  offset: optional(integer({ coerce: true, description: "First block (default 0)." })),
  length: optional(
    integer({ coerce: true, description: "Number of blocks (default: to the end)." }),
  ),
});

/** A sector range. */
export const sectorRange = object({
  offset: integer({ description: "First 512-byte sector." }),
  count: integer({ minimum: 1, description: "Number of sectors." }),
});

/** Body of POST /v1/devices/{id}/cbt/dirty. */
export const markDirtyBody = object({
  ranges: array(sectorRange, { minItems: 1, maxItems: 65536 }),
});

/** Body of POST /v1/snapshots. */
export const createSnapshotBody = object({
  devices: array(deviceId, { maxItems: 256, description: "Ids of attached devices." }),
  diffStorage: object({
    path: string({ description: "Regular file (created if missing), block device, or directory." }),
    limitBytes: integer({ minimum: 1, description: "The most the storage may grow to, in bytes." }),
  }),
  writable: optional(boolean({ description: "Whether images accept writes (default false)." })),
});

/** Body of POST /v1/snapshots/{id}/devices. */
export const addDeviceBody = object({ device: deviceId });

/** Query of GET /v1/snapshots/{id}/events. */
export const waitEventQuery = object({
  timeoutMs: optional(
    integer({ coerce: true, maximum: 300_000, description: "How long to wait (default 30000)." }),
  ),
});

/** Query of GET .../changes. */
export const changesQuery = object({
  since: optional(integer({
    coerce: true,
    maximum: 255,
    description: "Report blocks whose change number is above this (default: changesNumber - 1, " +
      "i.e. changed since the previous snapshot).",
  })),
});

// Response shapes (documentation only).

/** DeviceInfo. */
export const deviceInfo = object({
  id: deviceId,
  path: string(),
  capacityBytes: integer(),
  snapshotId: optional(snapshotId),
  locator: string({ description: "NBD URI (userspace) or device path (kernel) for tracked I/O." }),
});

/** CbtInfo. */
export const cbtInfo = object({
  capacityBytes: integer(),
  blockSize: integer({ description: "Tracking block size in bytes." }),
  blockCount: integer(),
  generationId: string(),
  changesNumber: integer({ maximum: 255 }),
});

/** Per-device part of a snapshot. */
export const snapshotImageInfo = object({
  deviceId: deviceId,
  locator: optional(string()),
  errorCode: integer({ minimum: 0 }),
  errorName: optional(string()),
});

/** SnapshotInfo. */
export const snapshotInfo = object({
  id: snapshotId,
  state: literal(["created", "taken", "corrupted"]),
  writable: boolean(),
  createdAt: string(),
  takenAt: optional(string()),
  devices: array(snapshotImageInfo),
  storage: optional(object({
    path: string(),
    capacityBytes: integer(),
    usedBytes: integer(),
    limitBytes: integer(),
  })),
  consistency: optional(object({
    freeze: boolean(),
    devices: array(object({
      deviceId: deviceId,
      filesystems: array(object({
        mountPoint: string(),
        fsType: string(),
        blockDevice: string(),
        frozen: boolean(),
        frozenMs: optional(integer({ minimum: 0 })),
        error: optional(string()),
      })),
      error: optional(string()),
    })),
    hooks: array(object({
      name: string(),
      phase: literal(["pre", "post"]),
      exitCode: optional(integer({ minimum: 0 })),
      timedOut: boolean(),
      durationMs: integer({ minimum: 0 }),
    })),
    thawedEarly: boolean(),
  })),
});

/** Body of POST /v1/snapshots/{id}/take (optional). */
export const takeBody = object({
  freeze: optional(boolean({
    description:
      "Freeze the file systems mounted on the devices and their partitions around the take (default true).",
  })),
});

/** SnapshotEvent. */
export const snapshotEvent = object({
  code: literal(["corrupted", "no_space"]),
  timeMs: integer(),
  deviceId: optional(deviceId),
  errorCode: optional(integer()),
  errorName: optional(string()),
  requestedSectors: optional(integer()),
});

/** Version document. */
export const versionInfo = object({
  service: string(),
  backend: literal(["kernel", "userspace"]),
  profile: optional(literal(["upstream", "outoftree"])),
  moduleVersion: optional(string()),
  capabilities: array(string()),
});

/** Image locator. */
export const imageLocator = object({
  snapshotId: snapshotId,
  deviceId: deviceId,
  locator: string(),
  sizeBytes: integer(),
});

/** Changed extents of an image. */
export const imageChanges = object({
  snapshotId: snapshotId,
  deviceId: deviceId,
  generationId: string(),
  changesNumber: integer(),
  since: integer(),
  blockSize: integer(),
  capacityBytes: integer(),
  changedBytes: integer(),
  extents: array(object({ offset: integer(), length: integer() })),
});

/** Problem document. */
export const problem = object({
  type: string(),
  title: string(),
  status: integer(),
  detail: string(),
  code: string(),
  errno: optional(string()),
  field: optional(string()),
  instance: optional(string()),
});
