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

import { DEVICE_ID_PATTERN, EVENT_LOG_CAPACITY } from "../driver.ts";
import { FULL_BACKUP_REASONS } from "../change_token.ts";

export { DEVICE_ID_PATTERN };
/** Snapshot ids: lower-case UUIDs. */
export const SNAPSHOT_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A device id. */
export const deviceId: Schema<string> = string({
  pattern: DEVICE_ID_PATTERN,
  patternMeaning: "a device id (letters, digits, '.', '_', ':' and '-', starting with a letter " +
    "or digit)",
  maxLength: 64,
  description:
    "Device id (its name): letters, digits, '.', '_', ':' and '-', at most 64 characters.",
});
/** A snapshot id. */
export const snapshotId: Schema<string> = string({
  pattern: SNAPSHOT_ID_PATTERN,
  patternMeaning: "a snapshot id (a lower-case UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e)",
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
  blockOffset: optional(
    integer({ coerce: true, description: "First tracking block (default 0)." }),
  ),
  blockCount: optional(
    integer({ coerce: true, description: "Number of tracking blocks (default: to the end)." }),
  ),
});

/** A sector range. */
export const sectorRange = object({
  sectorOffset: integer({ description: "First 512-byte sector." }),
  sectorCount: integer({ minimum: 1, description: "Number of 512-byte sectors." }),
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
    overwrite: optional(boolean({
      description: "Use an existing non-empty regular file, losing its contents (default false: " +
        "such a file is refused with 409).",
    })),
  }),
  writable: optional(boolean({ description: "Whether images accept writes (default false)." })),
});

/** Body of POST /v1/snapshots/{id}/devices. */
export const addDeviceBody = object({ device: deviceId });

/** Query of GET /v1/snapshots/{id}/events. */
export const waitEventQuery = object({
  after: optional(integer({
    coerce: true,
    description: "Answer the events with ids above this (default 0: every event the log holds).",
  })),
  timeoutMs: optional(
    integer({
      coerce: true,
      maximum: 300_000,
      description: "How long to wait for at least one event (default 30000).",
    }),
  ),
});

/** Query of GET /v1/snapshots/{id}/events/stream. */
export const streamEventsQuery = object({
  after: optional(integer({
    coerce: true,
    description: "Start after this event id (as Last-Event-ID does; default 0: every event held).",
  })),
});

/** A change token as a query value. */
const changeToken = string({
  maxLength: 128,
  description: "A change token (opaque: device, CBT generation, change number of one snapshot).",
});

/** Query of GET .../changes. */
export const changesQuery = object({
  since: optional(string({
    maxLength: 128,
    description: "The change token of an earlier snapshot of this device (default: the " +
      "previous snapshot's). A bare change number (0-255) only together with generation.",
  })),
  generation: optional(string({
    pattern: /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/,
    maxLength: 36,
    description: "The CBT generation (UUID) a bare change number in since belongs to.",
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
  state: optional(string({
    description: "attached (absent means attached), missing (could not be opened at start; " +
      "retried) or refused (path outside the allowed prefixes).",
  })),
  error: optional(string({ description: "Why a missing or refused device is not tracked." })),
});

/** CbtInfo. */
export const cbtInfo = object({
  capacityBytes: integer(),
  blockSizeBytes: integer({ description: "Tracking block size in bytes." }),
  blockCount: integer(),
  generationId: string(),
  changesNumber: integer({ maximum: 255 }),
});

const IMAGE_DEVICE_PATH = "Kernel backend: the image's block device on the service's host " +
  "(/dev/blksnap-MAJOR-MINOR upstream, /dev/veeamblksnapimg_MAJOR:MINOR out of tree).";

/** Per-device part of a snapshot. */
export const snapshotImageInfo = object({
  deviceId: deviceId,
  locator: optional(string({
    description: "After take: the image's NBD URI (nbd://HOST:PORT/DEVICE@SNAPSHOT or " +
      "nbd+unix:///DEVICE@SNAPSHOT?socket=PATH) when the service serves NBD, else the " +
      "kernel image's /dev path.",
  })),
  imageDevicePath: optional(string({ description: IMAGE_DEVICE_PATH })),
  errorCode: integer({ minimum: 0 }),
  errorName: optional(string()),
  changeToken: optional(changeToken),
  previousChangeToken: optional(string({
    maxLength: 128,
    description: "The change token of the device's previous snapshot in this CBT generation.",
  })),
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

/** SnapshotEvent with its id in the snapshot's event log. */
export const snapshotEvent = object({
  id: integer({ description: "Increasing id in the snapshot's event log." }),
  code: literal(["corrupted", "no_space"]),
  timeMs: integer(),
  deviceId: optional(deviceId),
  errorCode: optional(integer()),
  errorName: optional(string()),
  requestedSectors: optional(integer()),
});

/** Answer of GET /v1/snapshots/{id}/events. */
export const eventPage = object({
  events: array(snapshotEvent, { maxItems: EVENT_LOG_CAPACITY }),
  lastId: integer({ description: "The newest id the log has given out: ask after this next." }),
  truncated: boolean({
    description: `Events after the asked id are no longer in the log (it keeps the last ` +
      `${EVENT_LOG_CAPACITY}, and ids from before a restart of the service are not in it).`,
  }),
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
  locator: string({
    description: "The image's NBD URI when the service serves NBD, else its /dev path.",
  }),
  imageDevicePath: optional(string({ description: IMAGE_DEVICE_PATH })),
  sizeBytes: integer(),
  changeToken: optional(changeToken),
  previousChangeToken: optional(string({ maxLength: 128 })),
});

/** Changed extents of an image. */
export const imageChanges = object({
  snapshotId: snapshotId,
  deviceId: deviceId,
  changeToken: changeToken,
  sinceToken: optional(string({
    maxLength: 128,
    description: "The change token the changes are relative to.",
  })),
  generationId: string(),
  changesNumber: integer(),
  since: integer({ description: "The change number the changes are relative to." }),
  blockSizeBytes: integer(),
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
  reason: optional(literal(FULL_BACKUP_REASONS, {
    description: "FULL_BACKUP_REQUIRED: why the changes cannot be answered completely.",
  })),
  instance: optional(string()),
});
