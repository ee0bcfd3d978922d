/**
 * The userspace backend: the engine behind the SnapshotDriver seam, with
 * every attached device and every snapshot image served over NBD by the
 * service itself. Devices are regular files or block devices opened with
 * positioned I/O; writes are tracked only when they come through the
 * device's NBD export (its locator).
 *
 * NBD locators: `nbd://HOST:PORT/NAME` when listening on TCP, else
 * `nbd+unix:///NAME?socket=PATH`. Image exports are `<device>@<snapshot-id>`;
 * device names are restricted to letters, digits, '.', '_', ':' and '-' (as
 * in the kernel backend), so no name needs percent-encoding.
 *
 * @module
 */

import { basename } from "node:path";
import type {
  AttachOptions,
  Capability,
  CbtInfo,
  CreateSnapshotOptions,
  DeviceInfo,
  DriverStats,
  DriverVersion,
  EventPage,
  SectorRange,
  SnapshotDriver,
  SnapshotInfo,
  WaitEventsOptions,
} from "../driver.ts";
import { errnoName, isServiceError, ServiceError } from "../errors.ts";
import { Engine } from "../engine/engine.ts";
import type { EngineParams } from "../engine/params.ts";
import type { SnapshotImage } from "../engine/image.ts";
import { type Snapshot, storageLivesOn } from "../engine/snapshot.ts";
import type { StoreIdentity } from "../engine/block_store.ts";
import type { Tracker } from "../engine/tracker.ts";
import { type NbdLogger, startNbdServer } from "../nbd/mod.ts";
import type { NbdServer } from "../nbd/server.ts";
import type { FileStore } from "../store/file_store.ts";
import { openStoreVerified } from "../store/open_store.ts";
import type { CreatedFile, VerifyOpened } from "../store/open_verified.ts";
import { findServiceFile, sameObject } from "../store/service_files.ts";
import {
  checkAbsolute,
  checkDeviceIds,
  checkDirtyRanges,
  invalid,
  isCount,
} from "./argument_checks.ts";
import { DeviceListFile } from "./device_list_file.ts";
import { engineExports } from "./export_provider.ts";
import { imageExportName } from "./image_export.ts";
import { imageTokens } from "./image_tokens.ts";

const SECTOR_BYTES = 512;
const DEVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const CAPABILITIES: Capability[] = [
  "cbt",
  "cbt-dirty",
  "writable-images",
  "image-read",
  "nbd-exports",
  "events",
  "multi-device-snapshots",
];

/** Options of {@link UserspaceDriver.start}. */
export interface UserspaceDriverOptions {
  /** Where the NBD server listens: TCP (default 127.0.0.1:10809) and/or a Unix socket; its connection limit. */
  nbd?: { tcp?: { hostname?: string; port: number }; unixPath?: string; maxConnections?: number };
  /** Folder where attached devices are remembered across restarts; nothing is persisted without it. */
  stateDir?: string;
  /** Engine parameters over the kernel's defaults. */
  engineParams?: Partial<EngineParams>;
  /** Log sink for the NBD server and start-up messages. */
  logger?: NbdLogger;
}

interface Attached {
  tracker: Tracker;
  store: FileStore;
  path: string;
}

function deviceNameFor(path: string): string {
  const name = basename(path).replaceAll(/[^A-Za-z0-9._:-]/g, "_").replace(/^[._:-]+/, "");
  return name.slice(0, 64) || "device";
}

function iso(timeMs: number | undefined): string | undefined {
  return timeMs === undefined ? undefined : new Date(timeMs).toISOString();
}

/** SnapshotDriver on the userspace engine and its NBD exports. */
export class UserspaceDriver implements SnapshotDriver {
  readonly #engine: Engine;
  readonly #server: NbdServer;
  readonly #devices = new Map<string, Attached>();
  /** Storage files this driver created, by snapshot id: removed again at destroy. */
  readonly #createdStorage = new Map<string, CreatedFile>();
  /** The identity of each snapshot's difference storage, by snapshot id. */
  readonly #storageIdentities = new Map<string, StoreIdentity>();
  readonly #deviceList?: DeviceListFile;
  readonly #stateDir?: string;
  readonly #baseUri: (name: string) => string;
  #closed = false;

  private constructor(
    engine: Engine,
    server: NbdServer,
    deviceList: DeviceListFile | undefined,
    tcpHost: string | undefined,
    stateDir?: string,
  ) {
    this.#engine = engine;
    this.#stateDir = stateDir;
    this.#server = server;
    this.#deviceList = deviceList;
    this.#baseUri = server.tcpPort !== undefined
      ? (name) => `nbd://${tcpHost}:${server.tcpPort}/${name}`
      : (name) => `nbd+unix:///${name}?socket=${server.unixPath}`;
  }

  /**
   * Starts the engine and the NBD server and re-attaches remembered devices
   * (a device that cannot be opened again is logged and forgotten).
   * CONFLICT when the NBD port or socket is taken.
   */
  static async start(options: UserspaceDriverOptions = {}): Promise<UserspaceDriver> {
    const engine = new Engine({ params: options.engineParams });
    const listen = options.nbd ?? { tcp: { hostname: "127.0.0.1", port: 10809 } };
    const server = await startNbdServer(engineExports(engine), {
      ...listen,
      logger: options.logger,
    });
    const deviceList = options.stateDir ? new DeviceListFile(options.stateDir) : undefined;
    const driver = new UserspaceDriver(
      engine,
      server,
      deviceList,
      listen.tcp?.hostname ?? "127.0.0.1",
      options.stateDir,
    );
    if (deviceList) await driver.#restoreDevices(deviceList, options.logger);
    return driver;
  }

  async #restoreDevices(deviceList: DeviceListFile, logger: NbdLogger | undefined): Promise<void> {
    const { devices, problem } = await deviceList.load();
    if (problem) logger?.("warn", `userspace: ${problem}; starting with no devices`);
    for (const { name, path } of devices) {
      try {
        await this.#attach(path, name);
        logger?.("info", `userspace: re-attached ${name} (${path}) with a new CBT generation`);
      } catch (error) {
        logger?.(
          "warn",
          `userspace: cannot re-attach ${name} (${path}): ${(error as Error).message}`,
        );
      }
    }
    await this.#saveDevices();
  }

  /** The NBD server (its port and socket). */
  get nbdServer(): NbdServer {
    return this.#server;
  }

  /** The engine (tests and diagnostics). */
  get engine(): Engine {
    return this.#engine;
  }

  /** The NBD URI of export `name`. */
  nbdUri(name: string): string {
    return this.#baseUri(name);
  }

  #refuseClosed(): void {
    if (this.#closed) throw new ServiceError("UNAVAILABLE", "The userspace driver is closed");
  }

  #device(deviceId: string): Attached {
    const attached = this.#devices.get(deviceId);
    if (!attached) throw new ServiceError("NOT_FOUND", `No device ${deviceId} is attached`);
    return attached;
  }

  #snapshot(snapshotId: string): Snapshot {
    const snapshot = this.#engine.snapshots().find((s) => s.id === snapshotId);
    if (!snapshot) throw new ServiceError("NOT_FOUND", `No snapshot ${snapshotId}`);
    return snapshot;
  }

  #deviceInfo(attached: Attached): DeviceInfo {
    const snapshot = attached.tracker.snapshot;
    return {
      id: attached.tracker.name,
      path: attached.path,
      capacityBytes: attached.tracker.capacityBytes,
      ...(snapshot ? { snapshotId: snapshot.id } : {}),
      locator: this.nbdUri(attached.tracker.name),
    };
  }

  #snapshotInfo(snapshot: Snapshot): SnapshotInfo {
    const taken = snapshot.state === "taken" || snapshot.state === "corrupted";
    const storage = snapshot.storageInfo();
    return {
      id: snapshot.id,
      state: snapshot.state === "destroyed" ? "corrupted" : snapshot.state,
      writable: snapshot.writable,
      createdAt: iso(snapshot.createdAtMs)!,
      ...(snapshot.takenAtMs !== undefined ? { takenAt: iso(snapshot.takenAtMs) } : {}),
      devices: snapshot.trackers().map((tracker) => {
        const errorCode = snapshot.deviceError(tracker.name);
        const name = errorCode ? errnoName(errorCode) : undefined;
        return {
          deviceId: tracker.name,
          ...(taken ? { locator: this.nbdUri(imageExportName(tracker.name, snapshot.id)) } : {}),
          errorCode,
          ...(name ? { errorName: name } : {}),
          ...imageTokens(snapshot, tracker.name),
        };
      }),
      storage: {
        path: storage.path ?? "",
        capacityBytes: storage.capacityBytes,
        usedBytes: storage.usedBytes,
        limitBytes: storage.limitBytes,
      },
    };
  }

  async #saveDevices(): Promise<void> {
    await this.#deviceList?.save(
      [...this.#devices.values()].map((d) => ({ name: d.tracker.name, path: d.path })),
    );
  }

  /**
   * CONFLICT when the opened `store` is the service's own file, another
   * attached device, or (or holds) a snapshot's difference storage.
   */
  async #refuseDeviceIdentity(path: string, store: FileStore): Promise<void> {
    const what = `Cannot attach ${path}`;
    const own = await findServiceFile(this.#stateDir, store.identity);
    if (own) {
      throw new ServiceError("CONFLICT", `${what}: it is the service's own file ${own.path}`, {
        field: "path",
      });
    }
    for (const [name, attached] of this.#devices) {
      if (sameObject(attached.store.identity, store.identity)) {
        throw new ServiceError("CONFLICT", `${what}: it is already attached as ${name}`, {
          field: "path",
        });
      }
    }
    for (const [id, storage] of this.#storageIdentities) {
      if (storageLivesOn(storage, store.identity)) {
        throw new ServiceError(
          "CONFLICT",
          `${what}: it is (or holds) the difference storage of snapshot ${id}`,
          { field: "path" },
        );
      }
    }
  }

  async #attach(path: string, name: string, verify?: VerifyOpened): Promise<Attached> {
    if (!DEVICE_NAME.test(name)) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot attach ${path} as "${name}": a device name is 1 to 64 letters, digits, '.', '_', ':' or '-'`,
        { field: "name" },
      );
    }
    if (this.#devices.has(name)) {
      throw new ServiceError("CONFLICT", `Cannot attach ${path}: the name ${name} is taken`, {
        field: "name",
      });
    }
    const { store } = await openStoreVerified(path, {
      noDirectory: true,
      verify,
      purpose: "attach",
    }).catch((error) => {
      throw isServiceError(error) && error.field === undefined
        ? new ServiceError(error.code, error.message, { field: "path", errno: error.errno })
        : error;
    });
    try {
      await this.#refuseDeviceIdentity(path, store);
    } catch (error) {
      await store.close();
      throw error;
    }
    try {
      const tracker = await this.#engine.attach(name, store);
      const attached = { tracker, store, path };
      this.#devices.set(name, attached);
      return attached;
    } catch (error) {
      await store.close();
      throw error;
    }
  }

  /** Backend kind and capabilities. */
  version(): Promise<DriverVersion> {
    return Promise.resolve({ backend: "userspace", capabilities: [...CAPABILITIES] });
  }

  /**
   * Opens `path` and starts tracking it; its NBD export appears at once.
   * INVALID_ARGUMENT for a relative path, a bad name or a directory;
   * NOT_FOUND when missing; CONFLICT when the name or the device is attached.
   */
  async attach(path: string, options: AttachOptions = {}): Promise<DeviceInfo> {
    this.#refuseClosed();
    checkAbsolute(path, `Cannot attach ${path}`, "path");
    const attached = await this.#attach(
      path,
      options.name ?? deviceNameFor(path),
      options.verifyOpened,
    );
    await this.#saveDevices();
    return this.#deviceInfo(attached);
  }

  /** Stops tracking and closes the device. CONFLICT while it is in a snapshot. */
  async detach(deviceId: string): Promise<void> {
    this.#refuseClosed();
    const attached = this.#device(deviceId);
    await this.#engine.detach(deviceId);
    this.#devices.delete(deviceId);
    await attached.store.close();
    await this.#saveDevices();
  }

  /** All attached devices. */
  listDevices(): Promise<DeviceInfo[]> {
    return Promise.resolve([...this.#devices.values()].map((d) => this.#deviceInfo(d)));
  }

  /** One attached device. */
  getDevice(deviceId: string): Promise<DeviceInfo> {
    return Promise.resolve().then(() => this.#deviceInfo(this.#device(deviceId)));
  }

  /** The device's CBT info. */
  cbtInfo(deviceId: string): Promise<CbtInfo> {
    return Promise.resolve().then(() => this.#device(deviceId).tracker.cbt.info());
  }

  /** Bytes of the CBT read map. INVALID_ARGUMENT for a bad offset or length, OUT_OF_RANGE past the end. */
  readCbtMap(deviceId: string, range: { offset: number; length: number }): Promise<Uint8Array> {
    return Promise.resolve().then(() => {
      const { cbt } = this.#device(deviceId).tracker;
      const what = `Cannot read the CBT map of device ${deviceId}`;
      if (!isCount(range?.offset)) throw invalid(`${what}: bad offset`, "offset");
      if (!isCount(range.length)) throw invalid(`${what}: bad length`, "length");
      return cbt.read(range.offset, range.length);
    });
  }

  /** Marks sector ranges dirty in both tables. OUT_OF_RANGE past the device's last (possibly partial) sector. */
  markDirty(deviceId: string, ranges: SectorRange[]): Promise<void> {
    return Promise.resolve().then(() => {
      const { cbt } = this.#device(deviceId).tracker;
      const what = `Cannot mark ranges of device ${deviceId} dirty`;
      checkDirtyRanges(ranges, Math.ceil(cbt.capacityBytes / SECTOR_BYTES), what);
      cbt.markDirtySectors(ranges);
    });
  }

  /**
   * Opens the difference storage and creates a snapshot of the devices. A
   * storage file that does not exist is created, and removed again when the
   * snapshot is destroyed (as the kernel backend does). INVALID_ARGUMENT for
   * a device listed twice or a relative storage path; NOT_FOUND for an
   * unknown device; CONFLICT when one is in another snapshot.
   */
  async createSnapshot(options: CreateSnapshotOptions): Promise<SnapshotInfo> {
    this.#refuseClosed();
    const what = "Cannot create the snapshot";
    checkDeviceIds(options?.deviceIds, what);
    checkAbsolute(options.diffStorage?.path, what, "diffStorage.path");
    for (const id of options.deviceIds) this.#device(id);
    const limitSectors = Math.floor(options.diffStorage.limitBytes / SECTOR_BYTES);
    if (limitSectors < 1) {
      throw new ServiceError("INVALID_ARGUMENT", "diffStorage.limitBytes must be at least 512", {
        field: "diffStorage.limitBytes",
      });
    }
    const path = options.diffStorage.path;
    const opened = await openStoreVerified(path, {
      create: true,
      verify: options.verifyOpened,
      purpose: "use as difference storage",
      guardTruncation: true,
    }).catch((error) => {
      throw isServiceError(error) && error.field === undefined
        ? new ServiceError(error.code, error.message, {
          field: "diffStorage.path",
          errno: error.errno,
        })
        : error;
    });
    const { store: storage, createdIn } = opened;
    let snapshot: Snapshot;
    try {
      await this.#refuseStorageInUse(storage, options.deviceIds);
      await this.#claimStorage(storage, options.diffStorage.overwrite ?? false);
      snapshot = await this.#engine.createSnapshot({
        storage,
        storagePath: path,
        limitSectors,
        writable: options.writable ?? false,
        trackers: options.deviceIds,
      });
    } catch (error) {
      await storage.close().catch(() => {});
      await createdIn?.remove();
      throw error;
    }
    if (createdIn) this.#createdStorage.set(snapshot.id, createdIn);
    this.#storageIdentities.set(snapshot.id, storage.identity);
    return this.#snapshotInfo(snapshot);
  }

  /**
   * CONFLICT when `storage` is (or lives on) an attached device that is not
   * a member (copy-on-write data would overwrite it behind its tracker), or
   * is another snapshot's storage (both would hand out the same space). The
   * engine refuses a member's own device itself.
   */
  async #refuseStorageInUse(storage: FileStore, memberIds: string[]): Promise<void> {
    const own = await findServiceFile(this.#stateDir, storage.identity);
    if (own) {
      throw new ServiceError(
        "CONFLICT",
        `Cannot use ${storage.name} as difference storage: it is the service's own file ${own.path}`,
        { field: "diffStorage.path" },
      );
    }
    for (const [name, attached] of this.#devices) {
      if (memberIds.includes(name)) {
        if (storageLivesOn(storage.identity, attached.store.identity)) {
          throw invalid(
            `Cannot use ${storage.name} as difference storage: it is (or lives on) the member ` +
              `device ${name}`,
            "diffStorage.path",
          );
        }
        continue;
      }
      if (storageLivesOn(storage.identity, attached.store.identity)) {
        throw new ServiceError(
          "CONFLICT",
          `Cannot use ${storage.name} as difference storage: it is (or lives on) the attached ` +
            `device ${name}`,
          { field: "diffStorage.path" },
        );
      }
    }
    const { kind, device, inode } = storage.identity;
    for (const snapshot of this.#engine.snapshots()) {
      const other = this.#storageIdentities.get(snapshot.id);
      if (other && other.kind === kind && other.device === device && other.inode === inode) {
        throw new ServiceError(
          "CONFLICT",
          `Cannot use ${storage.name} as difference storage: snapshot ${snapshot.id} uses it`,
          { field: "diffStorage.path" },
        );
      }
    }
  }

  /**
   * An existing regular file must be empty, or `overwrite` given (it is then
   * emptied): it may hold data of a crashed run or of someone else, and a
   * store larger than the limit would break it. CONFLICT otherwise.
   */
  async #claimStorage(storage: FileStore, overwrite: boolean): Promise<void> {
    if (storage.identity.kind !== "file" || storage.capacityBytes === 0) return;
    if (!overwrite) {
      throw new ServiceError(
        "CONFLICT",
        `Cannot use ${storage.name} as difference storage: it is a non-empty file ` +
          `(${storage.capacityBytes} bytes); give overwrite to reuse it`,
        { field: "diffStorage.path" },
      );
    }
    await storage.truncate(0);
  }

  /** Adds a device to a snapshot that is not taken yet. */
  addDevice(snapshotId: string, deviceId: string): Promise<SnapshotInfo> {
    return Promise.resolve().then(() => {
      const snapshot = this.#snapshot(snapshotId);
      snapshot.add(this.#device(deviceId).tracker);
      return this.#snapshotInfo(snapshot);
    });
  }

  /** Takes the snapshot; its image exports appear. CONFLICT when taken or without devices. */
  async takeSnapshot(snapshotId: string): Promise<SnapshotInfo> {
    const snapshot = this.#snapshot(snapshotId);
    if (snapshot.state === "created" && snapshot.trackers().length === 0) {
      // The state of the snapshot, not the request, is at fault (as in the kernel backend).
      throw new ServiceError("CONFLICT", `Cannot take snapshot ${snapshotId}: it has no devices`);
    }
    await snapshot.take();
    return this.#snapshotInfo(snapshot);
  }

  /** All snapshots. */
  listSnapshots(): Promise<SnapshotInfo[]> {
    return Promise.resolve(this.#engine.snapshots().map((s) => this.#snapshotInfo(s)));
  }

  /** One snapshot. */
  snapshotInfo(snapshotId: string): Promise<SnapshotInfo> {
    return Promise.resolve().then(() => this.#snapshotInfo(this.#snapshot(snapshotId)));
  }

  /** Destroys the snapshot; its image exports go away. */
  async destroySnapshot(snapshotId: string): Promise<void> {
    await this.#snapshot(snapshotId).destroy();
    this.#storageIdentities.delete(snapshotId);
    await this.#removeCreatedStorage(snapshotId);
  }

  async #removeCreatedStorage(snapshotId: string): Promise<void> {
    const created = this.#createdStorage.get(snapshotId);
    if (created === undefined) return;
    this.#createdStorage.delete(snapshotId);
    await created.remove();
  }

  /**
   * The events of the snapshot's log after `options.after` (see
   * SnapshotDriver.waitEvents); NOT_FOUND when the snapshot is destroyed
   * meanwhile, UNAVAILABLE when the driver is closed meanwhile.
   */
  async waitEvents(snapshotId: string, options: WaitEventsOptions): Promise<EventPage> {
    if (!isCount(options?.timeoutMs)) {
      throw invalid("Cannot wait for events: timeoutMs must be an integer >= 0", "timeoutMs");
    }
    if (options.after !== undefined && !isCount(options.after)) {
      throw invalid("Cannot wait for events: after must be an integer >= 0", "after");
    }
    const snapshot = this.#snapshot(snapshotId);
    const page = await snapshot.waitEvents(options);
    if (page.events.length === 0 && snapshot.state === "destroyed") {
      // As in the kernel backend: a wait cut short by destroy (or close) is not a timeout.
      if (this.#closed) throw new ServiceError("UNAVAILABLE", "The userspace driver was closed");
      throw new ServiceError(
        "NOT_FOUND",
        `Snapshot ${snapshotId} was destroyed while waiting for an event`,
      );
    }
    return page;
  }

  /** Size of a device's image. NOT_FOUND for a non-member, CONFLICT before take. */
  imageSize(snapshotId: string, deviceId: string): Promise<number> {
    return Promise.resolve().then(() => this.#image(snapshotId, deviceId).sizeBytes);
  }

  /** The image of a member device: NOT_FOUND for a non-member, CONFLICT before take. */
  #image(snapshotId: string, deviceId: string): SnapshotImage {
    const snapshot = this.#snapshot(snapshotId);
    if (snapshot.state === "created" && snapshot.trackers().some((t) => t.name === deviceId)) {
      throw new ServiceError(
        "CONFLICT",
        `Cannot use the image of device ${deviceId} in snapshot ${snapshotId}: it is not taken`,
      );
    }
    return snapshot.image(deviceId);
  }

  /** Reads a device's image. INVALID_ARGUMENT for a bad offset, OUT_OF_RANGE past the end. */
  async readImage(
    snapshotId: string,
    deviceId: string,
    offset: number,
    into: Uint8Array,
  ): Promise<void> {
    const image = this.#image(snapshotId, deviceId);
    if (!isCount(offset)) {
      throw invalid(`Cannot read the image of device ${deviceId}: bad offset ${offset}`, "offset");
    }
    await image.read(offset, into);
  }

  /** Engine counters. */
  stats(): Promise<DriverStats> {
    const { cowCopies, chunksStored, events } = this.#engine.stats;
    return Promise.resolve({ cowCopies, chunksStored, events });
  }

  /** Destroys snapshots, stops the NBD server, closes devices (the device list stays for the next start). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#server.close();
    await this.#engine.close();
    await Promise.all([...this.#createdStorage.keys()].map((id) => this.#removeCreatedStorage(id)));
    await Promise.all([...this.#devices.values()].map((d) => d.store.close().catch(() => {})));
    this.#devices.clear();
  }
}
