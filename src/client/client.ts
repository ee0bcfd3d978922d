/**
 * The typed client for the service's HTTP API, on ky. Every route has a
 * method; problem documents become {@link ProblemError}, unreachable or slow
 * services {@link ConnectionError}. Only idempotent reads (GET) are retried.
 *
 * @example
 * ```ts
 * import { createClient } from "../../mod.ts";
 * const client = createClient({ baseUrl: "http://127.0.0.1:8037" });
 * const device = await client.devices.attach({ path: "/srv/disks/vm1.img" });
 * const snapshot = await client.snapshots.create({
 *   devices: [device.id],
 *   diffStorage: { path: "/srv/diff", limitBytes: 1 << 30 },
 * });
 * await client.snapshots.take(snapshot.id);
 * ```
 *
 * @module
 */

import ky, { isHTTPError, isNetworkError, isTimeoutError, type KyInstance } from "ky";
import type { DeviceInfo, DriverVersion, EventPage, LoggedEvent, SnapshotInfo } from "../driver.ts";
import type { ProblemDocument } from "../api/problem.ts";
import type { ImageChanges as ChangesOfImage } from "../api/changes.ts";
import { ConnectionError, ProblemError } from "./problem_error.ts";
import { readSse } from "./sse.ts";

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** The service's base URL, e.g. "http://127.0.0.1:8037". */
  baseUrl: string;
  /** Bearer token, when the service requires one. */
  token?: string;
  /** Per-request timeout in milliseconds (default 30000); long polls add their own wait. */
  timeoutMs?: number;
  /** How many times a GET is retried after a network error or a 5xx (default 2). */
  retries?: number;
  /** A fetch implementation (tests pass the app's own `request`). */
  fetch?: typeof fetch;
}

/** The version document. */
export interface ServiceVersion extends DriverVersion {
  /** The service's own version. */
  service: string;
}

/** CBT info as the API reports it. */
export interface CbtInfoResponse {
  /** Capacity in bytes. */
  capacityBytes: number;
  /** Tracking block size in bytes. */
  blockSizeBytes: number;
  /** Number of blocks. */
  blockCount: number;
  /** Generation UUID. */
  generationId: string;
  /** Changes number of the latest snapshot. */
  changesNumber: number;
}

/** A device image's locator. */
export interface ImageLocator {
  /** Snapshot id. */
  snapshotId: string;
  /** Device id. */
  deviceId: string;
  /** The image's NBD URI when the service serves NBD, else (kernel backend) its /dev path. */
  locator: string;
  /** Kernel backend: the image's block device on the service's host. */
  imageDevicePath?: string;
  /** Image size in bytes. */
  sizeBytes: number;
  /** The image's change token: keep it to ask for the changes since this snapshot later. */
  changeToken?: string;
  /** The token of the device's previous snapshot in this CBT generation, if any. */
  previousChangeToken?: string;
}

/** Changed extents of an image. */
export interface ImageChanges extends ChangesOfImage {
  /** Snapshot id. */
  snapshotId: string;
  /** Device id. */
  deviceId: string;
}

/** A `truncated` notice of {@link BlksnapClient.snapshots.watch}: events after `after` were missed. */
export interface TruncatedNotice {
  /** Kind. */
  code: "truncated";
  /** The id the stream resumed after. */
  after: number;
  /** The id of the first event the log still held. */
  resumedAt: number;
}

/** Options of {@link BlksnapClient.snapshots.watch}. */
export interface WatchOptions {
  /** Resume after this event id (sent as Last-Event-ID; default: every event the log holds). */
  after?: number;
  /** Ends the stream. */
  signal?: AbortSignal;
  /** Reconnections (with Last-Event-ID) after the connection breaks (default 3 in a row). */
  reconnects?: number;
}

/** Body of snapshot creation. */
export interface CreateSnapshotRequest {
  /** Attached device ids. */
  devices: string[];
  /** Difference storage path and limit; `overwrite` reuses an existing non-empty file (its contents are lost). */
  diffStorage: { path: string; limitBytes: number; overwrite?: boolean };
  /** Writable images (default false). */
  writable?: boolean;
}

/** The typed client. */
export interface BlksnapClient {
  /** GET /v1/version. */
  version(): Promise<ServiceVersion>;
  /** GET /v1/openapi.json. */
  openApi(): Promise<Record<string, unknown>>;
  /** GET /metrics (Prometheus text). */
  metrics(): Promise<string>;
  /** Device routes. */
  devices: {
    attach(request: { path: string; name?: string }): Promise<DeviceInfo>;
    list(): Promise<DeviceInfo[]>;
    get(id: string): Promise<DeviceInfo>;
    detach(id: string): Promise<void>;
  };
  /** CBT routes. */
  cbt: {
    info(deviceId: string): Promise<CbtInfoResponse>;
    /** The read map from tracking block `blockOffset`, `blockCount` blocks (one byte each). */
    map(
      deviceId: string,
      range?: { blockOffset?: number; blockCount?: number },
    ): Promise<Uint8Array>;
    /** Marks 512-byte sector ranges dirty. */
    markDirty(
      deviceId: string,
      ranges: { sectorOffset: number; sectorCount: number }[],
    ): Promise<void>;
  };
  /** Snapshot and event routes. */
  snapshots: {
    create(request: CreateSnapshotRequest): Promise<SnapshotInfo>;
    addDevice(snapshotId: string, deviceId: string): Promise<SnapshotInfo>;
    /** Takes the snapshot; `freeze: false` leaves the mounted file systems unfrozen. */
    take(snapshotId: string, options?: { freeze?: boolean }): Promise<SnapshotInfo>;
    list(): Promise<SnapshotInfo[]>;
    get(snapshotId: string): Promise<SnapshotInfo>;
    destroy(snapshotId: string): Promise<void>;
    /**
     * The events after `after` (default 0: all the log holds), waiting up to
     * `timeoutMs` (default 30000) for at least one; an empty list on timeout.
     */
    waitEvents(
      snapshotId: string,
      options?: { after?: number; timeoutMs?: number; signal?: AbortSignal },
    ): Promise<EventPage>;
    /**
     * Events as they come (SSE) until the snapshot goes away or `signal`
     * aborts; a broken connection is resumed with Last-Event-ID, so no event
     * the log still holds is missed (a {@link TruncatedNotice} says when some were).
     */
    watch(
      snapshotId: string,
      options?: WatchOptions,
    ): AsyncGenerator<LoggedEvent | TruncatedNotice>;
  };
  /** Image routes. */
  images: {
    locator(snapshotId: string, deviceId: string): Promise<ImageLocator>;
    /**
     * The image's bytes (a range when `offset`/`length` are given) as a
     * streaming Response. RangeError for a negative offset or a length below 1.
     */
    read(
      snapshotId: string,
      deviceId: string,
      range?: {
        offset?: number;
        length?: number;
        /** Several ranges at once (a 206 multipart/byteranges answer); overrides offset/length. */
        ranges?: Array<{ offset: number; length: number }>;
        signal?: AbortSignal;
      },
    ): Promise<Response>;
    /**
     * The extents changed since the snapshot of the change token `since`
     * (default: the previous snapshot); ProblemError FULL_BACKUP_REQUIRED
     * (with `reason`) when that cannot be answered completely. A bare
     * change number needs `generation`.
     */
    changes(
      snapshotId: string,
      deviceId: string,
      options?: { since?: string | number; generation?: string },
    ): Promise<ImageChanges>;
  };
}

function isProblem(value: unknown): value is ProblemDocument {
  return typeof value === "object" && value !== null && "status" in value && "code" in value &&
    "detail" in value;
}

async function translate(error: unknown, baseUrl: string): Promise<Error> {
  if (isHTTPError(error)) {
    const data = error.data ?? await error.response.clone().json().catch(() => undefined);
    if (isProblem(data)) return new ProblemError(data);
    return new ProblemError({
      type: "about:blank",
      title: error.response.statusText || "HTTP error",
      status: error.response.status,
      detail: `The service answered ${error.response.status} without a problem document`,
      code: "INTERNAL",
    });
  }
  if (isTimeoutError(error)) {
    return new ConnectionError(`The service at ${baseUrl} did not answer in time`, {
      cause: error,
    });
  }
  if (isNetworkError(error) || error instanceof TypeError) {
    return new ConnectionError(
      `Cannot reach the service at ${baseUrl}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  return error instanceof Error ? error : new Error(String(error));
}

function segment(value: string): string {
  return encodeURIComponent(value);
}

/** Creates a client for the service at `options.baseUrl`. */
export function createClient(options: ClientOptions): BlksnapClient {
  const timeout = options.timeoutMs ?? 30_000;
  const api: KyInstance = ky.create({
    baseUrl: options.baseUrl.endsWith("/") ? options.baseUrl : `${options.baseUrl}/`,
    timeout,
    retry: { limit: options.retries ?? 2, methods: ["get"] },
    headers: options.token ? { authorization: `Bearer ${options.token}` } : {},
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const call = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      throw await translate(error, options.baseUrl);
    }
  };
  const getJson = <T>(path: string, searchParams?: Record<string, number | string>) =>
    call(() => api.get(path, { searchParams }).json<T>());
  const postJson = <T>(path: string, json?: unknown) =>
    call(() => api.post(path, json === undefined ? {} : { json }).json<T>());
  const remove = (path: string) => call(async () => void await api.delete(path));

  return {
    version: () => getJson("v1/version"),
    openApi: () => getJson("v1/openapi.json"),
    metrics: () => call(() => api.get("metrics").text()),
    devices: {
      attach: (request) => postJson("v1/devices", request),
      list: () => getJson("v1/devices"),
      get: (id) => getJson(`v1/devices/${segment(id)}`),
      detach: (id) => remove(`v1/devices/${segment(id)}`),
    },
    cbt: {
      info: (deviceId) => getJson(`v1/devices/${segment(deviceId)}/cbt`),
      map: (deviceId, range = {}) =>
        call(async () => {
          const searchParams: Record<string, number> = {};
          if (range.blockOffset !== undefined) searchParams.blockOffset = range.blockOffset;
          if (range.blockCount !== undefined) searchParams.blockCount = range.blockCount;
          const response = await api.get(`v1/devices/${segment(deviceId)}/cbt/map`, {
            searchParams,
          });
          return new Uint8Array(await response.arrayBuffer());
        }),
      markDirty: (deviceId, ranges) =>
        call(async () =>
          void await api.post(`v1/devices/${segment(deviceId)}/cbt/dirty`, { json: { ranges } })
        ),
    },
    snapshots: {
      create: (request) => postJson("v1/snapshots", request),
      addDevice: (snapshotId, deviceId) =>
        postJson(`v1/snapshots/${segment(snapshotId)}/devices`, { device: deviceId }),
      take: (snapshotId, options) => postJson(`v1/snapshots/${segment(snapshotId)}/take`, options),
      list: () => getJson("v1/snapshots"),
      get: (snapshotId) => getJson(`v1/snapshots/${segment(snapshotId)}`),
      destroy: (snapshotId) => remove(`v1/snapshots/${segment(snapshotId)}`),
      waitEvents: (snapshotId, waitOptions = {}) =>
        call(() => {
          const timeoutMs = waitOptions.timeoutMs ?? 30_000;
          return api.get(`v1/snapshots/${segment(snapshotId)}/events`, {
            searchParams: {
              timeoutMs,
              ...(waitOptions.after !== undefined ? { after: waitOptions.after } : {}),
            },
            timeout: timeout + timeoutMs,
            retry: 0,
            signal: waitOptions.signal,
          }).json<EventPage>();
        }),
      watch: async function* (snapshotId, watchOptions = {}) {
        let after = watchOptions.after;
        let failures = 0;
        for (;;) {
          const headers: Record<string, string> = after === undefined
            ? {}
            : { "last-event-id": String(after) };
          const response = await call(() =>
            api.get(`v1/snapshots/${segment(snapshotId)}/events/stream`, {
              headers,
              timeout: false,
              retry: 0,
              signal: watchOptions.signal,
            })
          );
          if (!response.body) return;
          try {
            for await (const message of readSse(response.body)) {
              failures = 0;
              if (message.event === "end") {
                const problem = JSON.parse(message.data);
                if (isProblem(problem) && problem.code !== "NOT_FOUND") {
                  throw new ProblemError(problem);
                }
                return;
              }
              if (message.event === "truncated") {
                yield { code: "truncated", ...JSON.parse(message.data) } as TruncatedNotice;
              } else if (message.event === "corrupted" || message.event === "no_space") {
                const event = JSON.parse(message.data) as LoggedEvent;
                after = event.id;
                yield event;
              }
            }
          } catch (error) {
            if (error instanceof ProblemError || watchOptions.signal?.aborted) throw error;
            if (++failures > (watchOptions.reconnects ?? 3)) {
              throw await translate(error, options.baseUrl);
            }
            continue;
          }
          if (watchOptions.signal?.aborted) return;
          if (++failures > (watchOptions.reconnects ?? 3)) return;
        }
      },
    },
    images: {
      locator: (snapshotId, deviceId) =>
        getJson(`v1/snapshots/${segment(snapshotId)}/images/${segment(deviceId)}`),
      read: (snapshotId, deviceId, range = {}) => {
        const { offset, length } = range;
        if (offset !== undefined && !(Number.isSafeInteger(offset) && offset >= 0)) {
          return Promise.reject(new RangeError(`offset must be an integer >= 0, got ${offset}`));
        }
        if (length !== undefined && !(Number.isSafeInteger(length) && length >= 1)) {
          return Promise.reject(new RangeError(`length must be an integer >= 1, got ${length}`));
        }
        return call(() => {
          const headers: Record<string, string> = {};
          if (range.ranges?.length) {
            headers.range = `bytes=${
              range.ranges.map((r) => `${r.offset}-${r.offset + r.length - 1}`).join(",")
            }`;
          } else if (range.offset !== undefined || range.length !== undefined) {
            const first = range.offset ?? 0;
            headers.range = range.length === undefined
              ? `bytes=${first}-`
              : `bytes=${first}-${first + range.length - 1}`;
          }
          return api.get(`v1/snapshots/${segment(snapshotId)}/images/${segment(deviceId)}/data`, {
            headers,
            timeout: false,
            signal: range.signal,
          });
        });
      },
      changes: (snapshotId, deviceId, changeOptions = {}) => {
        const searchParams: Record<string, string> = {};
        if (changeOptions.since !== undefined) searchParams.since = String(changeOptions.since);
        if (changeOptions.generation !== undefined) {
          searchParams.generation = changeOptions.generation;
        }
        return getJson(
          `v1/snapshots/${segment(snapshotId)}/images/${segment(deviceId)}/changes`,
          searchParams,
        );
      },
    },
  };
}
