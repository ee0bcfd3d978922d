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
 * One owner: every tracked device is flocked (one service per device), and
 * a state folder is locked (one service per folder).
 * Restarts (with a state folder): attached devices are listed in `userspace-devices.json`; an attach is
 * undone when that list cannot be saved. Each device's CBT has a
 * write-intent record (cbt_journal.ts) unless `cbtPersistence` is false, so
 * a restart keeps the generation and the changes, and a crash keeps a
 * superset of them. A clean stop saves the snapshots too
 * (snapshot_persistence.ts) unless `destroySnapshotsOnClose`; after a crash
 * they are lost and the storage files the service created are removed. At
 * start, devices that cannot be opened stay listed as "missing" and are
 * retried every `retryMissingMs` (and by {@link UserspaceDriver.retryMissing});
 * devices whose path `checkPath` refuses stay listed as "refused" and are
 * not opened. Devices and snapshots are restored before the NBD server
 * starts, so no write can come before their state is back.
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
} from "../argument_checks.ts";
import { DeviceListFile, type RememberedDevice } from "./device_list_file.ts";
import { engineExports } from "./export_provider.ts";
import { imageExportName } from "../export_names.ts";
import { type CbtJournal, cbtRecordPath, removeCbtRecord } from "./cbt_journal.ts";
import { startCbtRecord } from "./cbt_record_start.ts";
import { DeviceLock } from "./device_lock.ts";
import { deviceIdentity } from "./device_identity.ts";
import { restoreSavedSnapshots, saveSnapshot } from "./snapshot_persistence.ts";
import {
  type CreatedStorage,
  removeCreatedStorage,
  type SavedSnapshot,
  SnapshotStateFile,
} from "./snapshot_state_file.ts";
import { STATE_LOCK_FILE_NAME, StateLock } from "../lock/state_lock.ts";
import { join } from "node:path";
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
  nbd?: {
    tcp?: { hostname?: string; port: number };
    unixPath?: string;
    maxConnections?: number;
    /** Blocking NBD Workers (src/nbd/worker); 0 or absent: the main thread. */
    workers?: number;
    /** How long the connections of a destroyed image stay open, answering ESHUTDOWN (default 2 s). */
    endedGraceMs?: number;
  };
  /** Folder where attached devices are remembered across restarts; nothing is persisted without it. */
  stateDir?: string;
  /** Engine parameters over the kernel's defaults. */
  engineParams?: Partial<EngineParams>;
  /** Log sink for the NBD server and start-up messages. */
  logger?: NbdLogger;
  /** Keep each device's CBT on stable storage across restarts and crashes (default true; needs stateDir). */
  cbtPersistence?: boolean;
  /** Destroy snapshots at close instead of saving them for the next start (default false). */
  destroySnapshotsOnClose?: boolean;
  /**
   * Checks a remembered path at start (the allowed prefixes); rejects with
   * the reason to refuse it, or resolves with the check that what is then
   * opened for it must pass (the same open-once rule as attach).
   */
  checkPath?: (path: string) => Promise<VerifyOpened | void>;
  /** How often devices missing at start are tried again, in ms (default 30000; 0: only on request). */
  retryMissingMs?: number;
}

interface Attached {
  tracker: Tracker;
  store: FileStore;
  path: string;
  lock?: DeviceLock;
  journal?: CbtJournal;
  /** True when the CBT came back from a record the service vouched for. */
  vouched: boolean;
}

interface Absent extends RememberedDevice {
  state: "missing" | "refused";
  error: string;
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
  #server!: NbdServer;
  readonly #devices = new Map<string, Attached>();
  /** Remembered devices not tracked now (missing or refused at start). */
  readonly #absent = new Map<string, Absent>();
  /** Storage files this driver created (removed again at destroy), by snapshot id. */
  readonly #createdStorage = new Map<string, CreatedStorage>();
  /** The folders (kept open) of the storage files created in this run, by snapshot id. */
  readonly #createdFiles = new Map<string, CreatedFile>();
  /** Each snapshot's difference storage store, by snapshot id. */
  readonly #storages = new Map<string, FileStore>();
  readonly #options: UserspaceDriverOptions;
  readonly #deviceList?: DeviceListFile;
  readonly #snapshotState?: SnapshotStateFile;
  #stateLock?: StateLock;
  #baseUri: (name: string) => string = () => "";
  #retryTimer?: ReturnType<typeof setInterval>;
  #retrying?: Promise<void>;
  #closed = false;

  private constructor(engine: Engine, options: UserspaceDriverOptions) {
    this.#engine = engine;
    this.#options = options;
    if (options.stateDir) {
      this.#deviceList = new DeviceListFile(options.stateDir);
      this.#snapshotState = new SnapshotStateFile(options.stateDir);
    }
  }

  /**
   * Locks the state folder, restores remembered devices (with their CBT)
   * and saved snapshots, then starts the NBD server. CONFLICT when another
   * service holds the state folder (naming its pid) or the NBD port or
   * socket is taken.
   */
  static async start(options: UserspaceDriverOptions = {}): Promise<UserspaceDriver> {
    const engine = new Engine({ params: options.engineParams });
    const driver = new UserspaceDriver(engine, options);
    const { stateDir } = options;
    if (stateDir) {
      driver.#stateLock = StateLock.acquire(
        join(stateDir, STATE_LOCK_FILE_NAME),
        `the state folder ${stateDir}`,
      );
    }
    try {
      await driver.#restore();
      const listen = options.nbd ?? { tcp: { hostname: "127.0.0.1", port: 10809 } };
      const server = await startNbdServer(engineExports(engine), {
        ...listen,
        logger: options.logger,
      });
      const tcpHost = listen.tcp?.hostname ?? "127.0.0.1";
      driver.#server = server;
      driver.#baseUri = server.tcpPort !== undefined
        ? (name) => `nbd://${tcpHost}:${server.tcpPort}/${name}`
        : (name) => `nbd+unix:///${name}?socket=${server.unixPath}`;
    } catch (error) {
      // Nothing was written yet: what was restored is saved back as it was.
      await driver.#release();
      throw error;
    }
    const every = options.retryMissingMs ?? 30_000;
    if (every > 0 && driver.#deviceList) {
      driver.#retryTimer = setInterval(() => driver.retryMissing(), every);
    }
    return driver;
  }

  #log(level: "info" | "warn" | "error", message: string): void {
    this.#options.logger?.(level, `userspace: ${message}`);
  }

  get #persistCbt(): boolean {
    return this.#options.stateDir !== undefined && this.#options.cbtPersistence !== false;
  }

  async #restore(): Promise<void> {
    if (!this.#deviceList) return;
    const { devices, problem } = await this.#deviceList.load();
    if (problem) this.#log("warn", `${problem}; starting with no devices`);
    for (const remembered of devices) await this.#restoreDevice(remembered);
    await this.#saveDevices();
    await this.#restoreSnapshots();
  }

  async #restoreDevice({ name, path }: RememberedDevice): Promise<boolean> {
    let verify: VerifyOpened | undefined;
    if (this.#options.checkPath) {
      try {
        verify = (await this.#options.checkPath(path)) ?? undefined;
      } catch (error) {
        const reason = (error as Error).message;
        const state = isServiceError(error, "NOT_FOUND") ? "missing" : "refused";
        this.#absent.set(name, { name, path, state, error: reason });
        this.#log("warn", `cannot re-attach ${name} (${path}), listed as ${state}: ${reason}`);
        return false;
      }
    }
    try {
      const attached = await this.#attach(path, name, { restore: true, verify });
      this.#absent.delete(name);
      const how = attached.vouched ? "its CBT generation kept" : "a new CBT generation";
      this.#log("info", `re-attached ${name} (${path}) with ${how}`);
      return true;
    } catch (error) {
      const reason = (error as Error).message;
      const state = isServiceError(error, "FORBIDDEN") ? "refused" : "missing";
      this.#absent.set(name, { name, path, state, error: reason });
      this.#log("warn", `cannot re-attach ${name} (${path}), listed as ${state}: ${reason}`);
      return false;
    }
  }

  /**
   * Tries again to open the devices missing since start (the periodic retry
   * runs this too); those that open come back with their CBT. Resolves once done.
   */
  retryMissing(): Promise<void> {
    this.#retrying ??= (async () => {
      try {
        let changed = false;
        for (const absent of [...this.#absent.values()]) {
          if (this.#closed || absent.state !== "missing") continue;
          if (this.#devices.has(absent.name)) continue;
          changed = (await this.#restoreDevice(absent)) || changed;
        }
        if (changed && !this.#closed) await this.#saveDevices().catch(() => {});
      } finally {
        this.#retrying = undefined;
      }
    })();
    return this.#retrying;
  }

  /** The NBD server (its port and socket). */
  get nbdServer(): NbdServer {
    return this.#server;
  }

  /**
   * The engine (tests and diagnostics).
   *
   * @internal
   */
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
    if (attached) return attached;
    const absent = this.#absent.get(deviceId);
    if (absent) {
      throw new ServiceError(
        "UNAVAILABLE",
        `Device ${deviceId} (${absent.path}) is ${absent.state}: ${absent.error}`,
      );
    }
    throw new ServiceError("NOT_FOUND", `No device ${deviceId} is attached`);
  }

  #absentInfo(absent: Absent): DeviceInfo {
    return {
      id: absent.name,
      path: absent.path,
      capacityBytes: 0,
      locator: this.nbdUri(absent.name),
      state: absent.state,
      error: absent.error,
    };
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
    await this.#deviceList?.save([
      ...[...this.#devices.values()].map((d) => ({ name: d.tracker.name, path: d.path })),
      ...[...this.#absent.values()].map(({ name, path }) => ({ name, path })),
    ]);
  }

  /**
   * Locks the device, restores its CBT from its record when `restore` (and
   * the record can be vouched for) and starts its journal, the tracker
   * frozen meanwhile. Rejects (leaving the lock to the caller's undo) when
   * the lock is refused or the record cannot be written.
   */
  async #persistDevice(attached: Attached, restore: boolean): Promise<void> {
    const { tracker, store, path } = attached;
    attached.lock = DeviceLock.acquire(path, store);
    const { stateDir } = this.#options;
    if (!this.#persistCbt || !stateDir) return;
    const started = await startCbtRecord(tracker, {
      path,
      store,
      stateDir,
      restore,
      logger: this.#options.logger,
    });
    attached.journal = started.journal;
    attached.vouched = started.vouched;
  }

  /** Undoes an attach that failed after the engine took the device. */
  async #undoAttach(attached: Attached, removeRecord: boolean): Promise<void> {
    this.#devices.delete(attached.tracker.name);
    attached.tracker.setWriteIntent(undefined);
    await this.#engine.detach(attached.tracker.name).catch(() => {});
    await attached.journal?.close({ clean: false }).catch(() => {});
    if (removeRecord && this.#options.stateDir) {
      await removeCbtRecord(cbtRecordPath(this.#options.stateDir, attached.tracker.name));
    }
    attached.lock?.release();
    await attached.store.close().catch(() => {});
  }

  /**
   * CONFLICT when the opened `store` is the service's own file, another
   * attached device, or (or holds) a snapshot's difference storage.
   */
  async #refuseDeviceIdentity(path: string, store: FileStore): Promise<void> {
    const what = `Cannot attach ${path}`;
    const own = await findServiceFile(this.#options.stateDir, store.identity);
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
    for (const [id, storage] of this.#storages) {
      if (storageLivesOn(storage.identity, store.identity)) {
        throw new ServiceError(
          "CONFLICT",
          `${what}: it is (or holds) the difference storage of snapshot ${id}`,
          { field: "path" },
        );
      }
    }
  }

  async #attach(
    path: string,
    name: string,
    { restore = false, verify }: { restore?: boolean; verify?: VerifyOpened } = {},
  ): Promise<Attached> {
    if (!DEVICE_NAME.test(name)) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot attach ${path} as "${name}": a device name is 1 to 64 letters, digits, '.', '_', ':' or '-'`,
        { field: "name" },
      );
    }
    if (this.#devices.has(name) || (!restore && this.#absent.has(name))) {
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
    let attached: Attached;
    try {
      const tracker = await this.#engine.attach(name, store);
      attached = { tracker, store, path, vouched: false };
      this.#devices.set(name, attached);
    } catch (error) {
      await store.close();
      throw error;
    }
    try {
      await this.#persistDevice(attached, restore);
    } catch (error) {
      await this.#undoAttach(attached, !restore);
      throw error;
    }
    return attached;
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
    const attached = await this.#attach(path, options.name ?? deviceNameFor(path), {
      verify: options.verifyOpened,
    });
    try {
      await this.#saveDevices();
    } catch (error) {
      await this.#undoAttach(attached, true);
      throw error;
    }
    return this.#deviceInfo(attached);
  }

  /**
   * Stops tracking and closes the device (its CBT record is removed); a
   * missing or refused device is forgotten. CONFLICT while it is in a snapshot.
   */
  async detach(deviceId: string): Promise<void> {
    this.#refuseClosed();
    if (!this.#devices.has(deviceId) && this.#absent.delete(deviceId)) {
      await this.#saveDevices();
      return;
    }
    const attached = this.#device(deviceId);
    await this.#engine.detach(deviceId);
    this.#devices.delete(deviceId);
    attached.tracker.setWriteIntent(undefined);
    await attached.journal?.close({ clean: false }).catch(() => {});
    if (this.#options.stateDir) {
      await removeCbtRecord(cbtRecordPath(this.#options.stateDir, deviceId));
    }
    attached.lock?.release();
    await attached.store.close();
    await this.#saveDevices();
  }

  /** All remembered devices: attached ones, then missing and refused ones. */
  listDevices(): Promise<DeviceInfo[]> {
    return Promise.resolve([
      ...[...this.#devices.values()].map((d) => this.#deviceInfo(d)),
      ...[...this.#absent.values()].filter((a) => !this.#devices.has(a.name)).map((a) =>
        this.#absentInfo(a)
      ),
    ]);
  }

  /** One device (a missing or refused one with its state and error). */
  getDevice(deviceId: string): Promise<DeviceInfo> {
    return Promise.resolve().then(() => {
      const absent = this.#absent.get(deviceId);
      if (absent && !this.#devices.has(deviceId)) return this.#absentInfo(absent);
      return this.#deviceInfo(this.#device(deviceId));
    });
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
    return Promise.resolve().then(async () => {
      const { tracker } = this.#device(deviceId);
      const { cbt } = tracker;
      const what = `Cannot mark ranges of device ${deviceId} dirty`;
      checkDirtyRanges(ranges, Math.ceil(cbt.capacityBytes / SECTOR_BYTES), what);
      cbt.markDirtySectors(ranges);
      await tracker.marksDurable();
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
    this.#storages.set(snapshot.id, storage);
    if (createdIn) {
      this.#createdFiles.set(snapshot.id, createdIn);
      this.#createdStorage.set(snapshot.id, {
        snapshotId: snapshot.id,
        path,
        device: storage.identity.device,
        inode: storage.identity.inode,
      });
      try {
        await this.#saveSnapshotState({ clean: false, snapshots: [] });
      } catch (error) {
        await this.destroySnapshot(snapshot.id).catch(() => {});
        throw error;
      }
    }
    return this.#snapshotInfo(snapshot);
  }

  /** Writes the snapshot state file (the created storage files, and at a clean stop the snapshots). */
  async #saveSnapshotState(
    state: { clean: boolean; snapshots: SavedSnapshot[] },
  ): Promise<void> {
    await this.#snapshotState?.save({
      ...state,
      createdStorage: [...this.#createdStorage.values()],
    });
  }

  /**
   * At start: restores the snapshots a clean stop saved; after an unclean
   * stop reports them lost and removes the storage files the service
   * created. Then marks the state as running (not clean).
   */
  async #restoreSnapshots(): Promise<void> {
    if (!this.#snapshotState) return;
    const restored = await restoreSavedSnapshots(this.#snapshotState, {
      engine: this.#engine,
      vouched: (name) => this.#devices.get(name)?.vouched === true,
      logger: this.#options.logger,
    });
    for (const { snapshot, storage, created } of restored) {
      this.#storages.set(snapshot.id, storage);
      if (created) this.#createdStorage.set(snapshot.id, created);
    }
    await this.#saveSnapshotState({ clean: false, snapshots: [] });
  }

  /**
   * CONFLICT when `storage` is (or lives on) an attached device that is not
   * a member (copy-on-write data would overwrite it behind its tracker), or
   * is another snapshot's storage (both would hand out the same space). The
   * engine refuses a member's own device itself.
   */
  async #refuseStorageInUse(storage: FileStore, memberIds: string[]): Promise<void> {
    const own = await findServiceFile(this.#options.stateDir, storage.identity);
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
      const other = this.#storages.get(snapshot.id)?.identity;
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
    this.#storages.delete(snapshotId);
    if (await this.#removeCreatedStorage(snapshotId)) {
      await this.#saveSnapshotState({ clean: false, snapshots: [] }).catch((error) =>
        this.#log("error", (error as Error).message)
      );
    }
  }

  /** Removes the storage file created for `snapshotId`, if any; true when there was one. */
  async #removeCreatedStorage(snapshotId: string): Promise<boolean> {
    const created = this.#createdStorage.get(snapshotId);
    const file = this.#createdFiles.get(snapshotId);
    this.#createdFiles.delete(snapshotId);
    if (created === undefined) {
      await file?.remove();
      return false;
    }
    this.#createdStorage.delete(snapshotId);
    if (file) await file.remove();
    else await removeCreatedStorage(created);
    return true;
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

  /**
   * Stops the NBD server and, with a state folder, saves the snapshots
   * (unless destroySnapshotsOnClose, then destroys them) and each device's
   * CBT record (closed cleanly); closes devices and releases the locks.
   * The device list stays for the next start.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#retryTimer);
    await this.#retrying;
    await this.#server.close();
    await this.#release();
  }

  /** Saves what survives, then closes the engine, devices and locks. */
  async #release(): Promise<void> {
    const trackers = this.#engine.trackers();
    await Promise.all(trackers.map((tracker) => tracker.freeze()));
    try {
      await this.#saveForNextStart();
      await this.#engine.close().catch((error) => this.#log("error", (error as Error).message));
    } finally {
      for (const tracker of trackers) tracker.unfreeze();
    }
    for (const attached of this.#devices.values()) {
      await attached.store.close().catch(() => {});
      attached.lock?.release();
    }
    this.#devices.clear();
    this.#stateLock?.release();
  }

  /** Clean stop: snapshots and CBT records for the next start (writes are stopped). */
  async #saveForNextStart(): Promise<void> {
    if (!this.#options.stateDir) {
      for (const id of [...this.#createdStorage.keys()]) await this.#removeCreatedStorage(id);
      return;
    }
    const saved: SavedSnapshot[] = [];
    if (!this.#options.destroySnapshotsOnClose) {
      for (const snapshot of this.#engine.snapshots()) {
        const storage = this.#storages.get(snapshot.id);
        const kept = storage
          ? await saveSnapshot(snapshot, storage).catch(() => undefined)
          : undefined;
        if (kept) saved.push(kept);
        else this.#log("warn", `snapshot ${snapshot.id} cannot be kept across the restart`);
      }
      const keptIds = new Set(saved.map((s) => s.id));
      for (const id of [...this.#createdStorage.keys()]) {
        if (!keptIds.has(id)) await this.#removeCreatedStorage(id);
      }
    } else {
      for (const id of [...this.#createdStorage.keys()]) await this.#removeCreatedStorage(id);
    }
    await this.#saveSnapshotState({ clean: true, snapshots: saved }).catch((error) =>
      this.#log("error", (error as Error).message)
    );
    for (const file of this.#createdFiles.values()) await file.release();
    this.#createdFiles.clear();
    for (const attached of this.#devices.values()) {
      attached.tracker.setWriteIntent(undefined);
      if (!attached.journal) continue;
      try {
        await attached.store.flush();
        const identity = await deviceIdentity(attached.path, attached.store);
        await attached.journal.close({ clean: true, identity });
      } catch (error) {
        this.#log(
          "error",
          `cannot save the CBT of ${attached.tracker.name}: ${(error as Error).message}`,
        );
      }
    }
  }
}
