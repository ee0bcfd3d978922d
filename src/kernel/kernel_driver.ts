/**
 * {@link KernelDriver}: the SnapshotDriver on the real blksnap module, through
 * ioctls on its control device and on the block-device filter (ABI.md).
 *
 * Behaviour:
 * - Start ({@link createKernelDriver}): detect the profile (which control
 *   device exists, then VERSION); without a module, UNAVAILABLE naming what
 *   is missing. Then reload the state file from `stateDir` and keep what the
 *   module still has (CBTINFO per device, COLLECT for snapshots).
 * - Devices: the id is the name given at attach or the path's base name. The
 *   path must be a block device (BLKGETSIZE64 answers; else INVALID_ARGUMENT).
 *   Attaching a device the module already tracks with blksnap (EALREADY:
 *   attached by an earlier run of the service, or by another tool) adopts it
 *   and keeps its CBT; another filter on it (EBUSY) is a CONFLICT. Detach
 *   refuses devices of a snapshot, and forgets a device the module no longer
 *   tracks.
 * - CBT: CBTINFO; the map is read in pieces (1 MiB per ioctl by default)
 *   after checking the range against the block count (OUT_OF_RANGE); dirty
 *   ranges are checked against the capacity and sent in batches, one range
 *   per ioctl on the upstream profile (its v7 CBTDIRTY reads only the first
 *   element of the array, see seed 004).
 * - Snapshots: create takes a regular file (created empty if missing, and
 *   removed again at destroy), a block device, or a directory (the module
 *   makes an unnamed file there); the limit is `limitBytes` rounded down to
 *   512-byte sectors. Devices are added with SNAPSHOTADD; when one fails, the
 *   new snapshot is destroyed again. Info asks SNAPSHOTINFO per device: the
 *   image locator is the device directory plus the name the module reports,
 *   and a non-zero error code marks the snapshot corrupted. Snapshots the
 *   module lists but the driver does not know (lost state) are adopted with
 *   no devices. Storage usage is not reported: the module does not tell it.
 *   `writable` is recorded as asked; the module's images are block devices
 *   that accept writes either way (writes to them mark both CBT tables).
 * - Events: SNAPSHOT_WAIT_EVENT on a worker thread (event_waiter.ts).
 * - Images: size by BLKGETSIZE64 on the image device, data by node:fs
 *   positioned reads; SNAPSHOT_CORRUPTED once the module reports an error.
 * - close(): destroys the snapshots this service created (unless
 *   `keepSnapshotsOnClose`), leaves devices attached so that tracking goes
 *   on, and closes every fd, handle and worker.
 *
 * Errors follow errno.ts (the EINVAL rule is documented there).
 *
 * @module
 */

import { open as openFile, unlink } from "node:fs/promises";
import type {
  AttachOptions,
  Capability,
  CbtInfo,
  CreateSnapshotOptions,
  DeviceInfo,
  DriverVersion,
  SectorRange,
  SnapshotDriver,
  SnapshotEvent,
  SnapshotImageInfo,
  SnapshotInfo,
} from "../driver.ts";
import { errnoName, isServiceError, ServiceError } from "../errors.ts";
import { formatUuid, parseUuid, SECTOR_SIZE } from "./abi.ts";
import { type BlockingIoctl, WorkerIoctl } from "./blocking_ioctl.ts";
import { EventWaiter } from "./event_waiter.ts";
import { decodeEvent } from "./events.ts";
import { fsError, ImageReader } from "./image_reader.ts";
import { type DeviceNumber, type Libc, realLibc } from "./libc.ts";
import { ModuleClient } from "./module_client.ts";
import { detectProfile } from "./profiles.ts";
import { loadState, type PersistedSnapshot, saveState } from "./state_file.ts";

/** Options of {@link KernelDriver}. */
export interface KernelDriverOptions {
  /** The libc calls; the process's libc (opened on first use) by default. */
  libc?: Libc;
  /**
   * Runs SNAPSHOT_WAIT_EVENT off the main thread. Default: a {@link WorkerIoctl}
   * on `waitLibraryPath` when `libc` is the real one; with a custom `libc`,
   * that libc's `ioctl` called in place (for fakes, which do not block).
   */
  blockingIoctl?: BlockingIoctl;
  /** Library the event workers dlopen (default `libc.so.6`). */
  waitLibraryPath?: string;
  /** Directory for the state file; without it nothing survives a restart. */
  stateDir?: string;
  /** Directory of device nodes (default `/dev`); tests use a temp dir. */
  devDir?: string;
  /** Leave the snapshots this service created alive at close() (default false). */
  keepSnapshotsOnClose?: boolean;
  /** Bytes of CBT map per CBTMAP ioctl (default 1 MiB). */
  cbtMapPieceBytes?: number;
  /** Ranges per CBTDIRTY ioctl on the out-of-tree profile (default 4096). */
  dirtyBatchRanges?: number;
  /** Extra milliseconds a waitEvent allows for the trip through the worker (default 50). */
  eventGraceMs?: number;
}

interface DeviceRecord {
  id: string;
  path: string;
  capacityBytes: number;
  number?: DeviceNumber;
}

interface SnapshotRecord extends PersistedSnapshot {
  uuid: Uint8Array;
  /** Made by this driver instance (close() destroys those); false for restored and adopted ones. */
  createdHere: boolean;
  /** Image device paths read through the image reader, released at destroy. */
  images: Set<string>;
}

interface Kernel {
  client: ModuleClient;
  waiter: EventWaiter;
}

const CAPABILITIES: Capability[] = [
  "cbt",
  "cbt-dirty",
  "writable-images",
  "image-read",
  "events",
  "multi-device-snapshots",
];

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const ENODEV = 19;

function baseName(path: string): string {
  return path.replace(/\/+$/, "").split("/").pop() ?? "";
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function invalid(detail: string, field?: string): ServiceError {
  return new ServiceError("INVALID_ARGUMENT", detail, { field });
}

/** A {@link BlockingIoctl} that calls `libc.ioctl` in place: for fakes that do not block. */
function directIoctl(libc: Libc): BlockingIoctl {
  return {
    call: (fd, request, arg) => Promise.resolve(libc.ioctl(fd, request, arg)),
    close() {},
  };
}

/** Creates an empty regular file at `path` unless something exists there; true when it made one. */
async function createIfMissing(path: string, what: string): Promise<boolean> {
  try {
    const handle = await openFile(path, "wx", 0o600);
    await handle.close();
    return true;
  } catch (error) {
    if ((error as { code?: string })?.code === "EEXIST") return false;
    throw fsError(error, `${what}: cannot create the difference storage ${path}`);
  }
}

/** The SnapshotDriver on the blksnap kernel module. Build it with {@link createKernelDriver}. */
export class KernelDriver implements SnapshotDriver {
  #libc: Libc;
  #options: KernelDriverOptions;
  #kernel?: Promise<Kernel>;
  #devices = new Map<string, DeviceRecord>();
  #snapshots = new Map<string, SnapshotRecord>();
  #images = new ImageReader();
  #saving: Promise<void> = Promise.resolve();
  #closed = false;

  /** Keeps the options; nothing is opened until {@link KernelDriver.start} or the first call. */
  constructor(options: KernelDriverOptions = {}) {
    this.#libc = options.libc ?? realLibc();
    this.#options = options;
  }

  /**
   * Detects the module and reloads the state (once). UNAVAILABLE without a
   * module (naming what is missing), MODULE_MISMATCH when VERSION fails,
   * FORBIDDEN without permission.
   */
  async start(): Promise<void> {
    await this.#ready();
  }

  #ready(): Promise<Kernel> {
    if (this.#closed) {
      return Promise.reject(new ServiceError("UNAVAILABLE", "The kernel driver is closed"));
    }
    this.#kernel ??= this.#init();
    return this.#kernel;
  }

  async #init(): Promise<Kernel> {
    const { devDir } = this.#options;
    const client = new ModuleClient(this.#libc, detectProfile(this.#libc, { devDir }), { devDir });
    const blocking = this.#options.blockingIoctl ??
      (this.#options.libc === undefined
        ? new WorkerIoctl({ libraryPath: this.#options.waitLibraryPath })
        : directIoctl(this.#libc));
    const waiter = new EventWaiter(blocking, client.controlFd, {
      graceMs: this.#options.eventGraceMs,
    });
    try {
      await this.#restore(client);
    } catch (error) {
      waiter.close();
      client.close();
      throw error;
    }
    return { client, waiter };
  }

  async #restore(client: ModuleClient): Promise<void> {
    const dir = this.#options.stateDir;
    if (dir === undefined) return;
    const state = await loadState(dir);
    if (!state) return;
    for (const saved of state.devices) {
      const device: DeviceRecord = { ...saved, number: this.#libc.blockDeviceNumber(saved.path) };
      try {
        device.capacityBytes = client.cbtInfo(device).capacityBytes;
        this.#devices.set(device.id, device);
      } catch (error) {
        if (!isServiceError(error, "NOT_FOUND")) throw error;
      }
    }
    const listed = new Set(client.collect());
    for (const saved of state.snapshots) {
      const uuid = parseUuid(saved.id);
      if (!uuid || !listed.has(saved.id)) continue;
      const deviceIds = saved.deviceIds.filter((id) => this.#devices.has(id));
      this.#snapshots.set(saved.id, {
        ...saved,
        deviceIds,
        uuid,
        createdHere: false,
        images: new Set(),
      });
    }
    this.#persist(client);
  }

  /** Queues a write of the state file (when there is a state directory). */
  #persist(client: ModuleClient): void {
    const dir = this.#options.stateDir;
    if (dir === undefined) return;
    const devices = [...this.#devices.values()].map(({ id, path, capacityBytes }) => ({
      id,
      path,
      capacityBytes,
    }));
    const snapshots = [...this.#snapshots.values()].map(
      ({ uuid: _uuid, images: _images, createdHere: _createdHere, ...saved }) => saved,
    );
    const state = { version: 1 as const, profile: client.profile, devices, snapshots };
    const write = () => saveState(dir, state);
    this.#saving = this.#saving.then(write, write);
  }

  /** Resolves when every state change so far is on disk; rejects with the last write's error. */
  flushState(): Promise<void> {
    return this.#saving;
  }

  #device(deviceId: string): DeviceRecord {
    const device = this.#devices.get(deviceId);
    if (!device) throw new ServiceError("NOT_FOUND", `Device ${deviceId} is not attached`);
    return device;
  }

  #ownerOf(deviceId: string): SnapshotRecord | undefined {
    for (const snapshot of this.#snapshots.values()) {
      if (snapshot.deviceIds.includes(deviceId)) return snapshot;
    }
    return undefined;
  }

  #deviceInfo(device: DeviceRecord): DeviceInfo {
    return {
      id: device.id,
      path: device.path,
      capacityBytes: device.capacityBytes,
      snapshotId: this.#ownerOf(device.id)?.id,
      locator: device.path,
    };
  }

  /** The record of snapshot `id`; adopts one the module lists but the driver does not know. */
  #snapshot({ client }: Kernel, id: string): SnapshotRecord {
    const key = typeof id === "string" ? id.toLowerCase() : "";
    const known = this.#snapshots.get(key);
    if (known) return known;
    const uuid = parseUuid(key);
    if (uuid && client.collect().includes(key)) {
      const adopted: SnapshotRecord = {
        id: key,
        uuid,
        deviceIds: [],
        createdAt: new Date().toISOString(),
        writable: false,
        createdHere: false,
        images: new Set(),
      };
      this.#snapshots.set(key, adopted);
      this.#persist(client);
      return adopted;
    }
    throw new ServiceError("NOT_FOUND", `Snapshot ${id} does not exist`);
  }

  /** SNAPSHOTINFO of one device as the driver reports it; a vanished device reports its errno. */
  #imageInfo({ client }: Kernel, deviceId: string): SnapshotImageInfo {
    const device = this.#devices.get(deviceId);
    if (!device) return { deviceId, errorCode: ENODEV, errorName: "ENODEV" };
    try {
      const state = client.snapshotState(device);
      return {
        deviceId,
        locator: state.locator,
        errorCode: state.errorCode,
        errorName: state.errorCode ? errnoName(state.errorCode) ?? "EIO" : undefined,
      };
    } catch (error) {
      if (!isServiceError(error, "NOT_FOUND")) throw error;
      return { deviceId, errorCode: ENODEV, errorName: "ENODEV" };
    }
  }

  #info(kernel: Kernel, snapshot: SnapshotRecord): SnapshotInfo {
    const devices = snapshot.deviceIds.map((id) => this.#imageInfo(kernel, id));
    const taken = snapshot.takenAt !== undefined || devices.some((d) => d.locator !== undefined);
    const corrupted = devices.some((d) => d.errorCode !== 0);
    return {
      id: snapshot.id,
      state: corrupted ? "corrupted" : taken ? "taken" : "created",
      writable: snapshot.writable,
      createdAt: snapshot.createdAt,
      takenAt: snapshot.takenAt,
      devices,
    };
  }

  /** Drops the record of a snapshot the module no longer has (or just destroyed). */
  async #forget({ client, waiter }: Kernel, snapshot: SnapshotRecord): Promise<void> {
    this.#snapshots.delete(snapshot.id);
    waiter.forget(snapshot.id);
    this.#persist(client);
    for (const path of snapshot.images) await this.#images.release(path);
    if (snapshot.storageCreated && snapshot.storage) {
      await unlink(snapshot.storage.path).catch(() => {});
    }
  }

  /** Backend kind, profile, module version and capabilities. */
  async version(): Promise<DriverVersion> {
    const { client } = await this.#ready();
    return {
      backend: "kernel",
      profile: client.profile,
      moduleVersion: client.moduleVersion,
      capabilities: [...CAPABILITIES],
    };
  }

  /**
   * Starts tracking the block device at `path` (adopting a tracker the module
   * already has). INVALID_ARGUMENT for a relative path, a bad name or a path
   * that is not a block device; NOT_FOUND when it does not exist; CONFLICT
   * when the name or path is attached or another filter owns the device.
   */
  async attach(path: string, options: AttachOptions = {}): Promise<DeviceInfo> {
    const { client } = await this.#ready();
    if (typeof path !== "string" || !path.startsWith("/")) {
      throw invalid(`Cannot attach ${path}: the path must be absolute`, "path");
    }
    const id = options.name ?? baseName(path);
    const what = `Cannot attach ${path}`;
    if (!NAME_PATTERN.test(id)) {
      throw invalid(
        `${what}: "${id}" is not a valid device name (letters, digits, . _ : -)`,
        "name",
      );
    }
    if (this.#devices.has(id)) {
      throw new ServiceError("CONFLICT", `${what}: a device named ${id} is already attached`);
    }
    for (const device of this.#devices.values()) {
      if (device.path === path) {
        throw new ServiceError("CONFLICT", `${what}: it is already attached as ${device.id}`);
      }
    }
    const capacityBytes = client.blockDeviceSize(path, what);
    client.attach(path, what);
    const device = { id, path, capacityBytes, number: this.#libc.blockDeviceNumber(path) };
    this.#devices.set(id, device);
    this.#persist(client);
    return this.#deviceInfo(device);
  }

  /** Stops tracking (the module drops the CBT). CONFLICT while the device is in a snapshot. */
  async detach(deviceId: string): Promise<void> {
    const { client } = await this.#ready();
    const device = this.#device(deviceId);
    const what = `Cannot detach device ${deviceId}`;
    const owner = this.#ownerOf(deviceId);
    if (owner) throw new ServiceError("CONFLICT", `${what}: it belongs to snapshot ${owner.id}`);
    client.detach(device.path, what);
    this.#devices.delete(deviceId);
    this.#persist(client);
  }

  /** All attached devices. */
  async listDevices(): Promise<DeviceInfo[]> {
    await this.#ready();
    return [...this.#devices.values()].map((device) => this.#deviceInfo(device));
  }

  /** One attached device. NOT_FOUND when unknown. */
  async getDevice(deviceId: string): Promise<DeviceInfo> {
    await this.#ready();
    return this.#deviceInfo(this.#device(deviceId));
  }

  /** CBTINFO of a device. */
  async cbtInfo(deviceId: string): Promise<CbtInfo> {
    const { client } = await this.#ready();
    return client.cbtInfo(this.#device(deviceId));
  }

  /** The CBT read map, `length` bytes from block `offset`. OUT_OF_RANGE past the block count. */
  async readCbtMap(
    deviceId: string,
    range: { offset: number; length: number },
  ): Promise<Uint8Array> {
    const { client } = await this.#ready();
    const device = this.#device(deviceId);
    const what = `Cannot read the CBT map of device ${deviceId}`;
    if (!isCount(range?.offset)) throw invalid(`${what}: bad offset`, "offset");
    if (!isCount(range.length)) throw invalid(`${what}: bad length`, "length");
    const { blockCount } = client.cbtInfo(device);
    if (range.offset + range.length > blockCount) {
      throw new ServiceError(
        "OUT_OF_RANGE",
        `${what}: blocks ${range.offset}..${range.offset + range.length} pass the end ` +
          `(${blockCount} blocks)`,
      );
    }
    if (range.length === 0) return new Uint8Array(0);
    const pieceBytes = this.#options.cbtMapPieceBytes ?? 1 << 20;
    return client.readCbtMap(device, range.offset, range.length, pieceBytes);
  }

  /** Marks sector ranges dirty in both CBT tables. OUT_OF_RANGE past the capacity. */
  async markDirty(deviceId: string, ranges: SectorRange[]): Promise<void> {
    const { client } = await this.#ready();
    const device = this.#device(deviceId);
    const what = `Cannot mark ranges of device ${deviceId} dirty`;
    if (!Array.isArray(ranges)) throw invalid(`${what}: ranges must be an array`, "ranges");
    if (ranges.length === 0) return;
    const capacitySectors = Math.floor(client.cbtInfo(device).capacityBytes / SECTOR_SIZE);
    ranges.forEach((range, i) => {
      if (!isCount(range?.offsetSectors) || !isCount(range.countSectors) || !range.countSectors) {
        throw invalid(`${what}: range ${i} needs offsetSectors >= 0, countSectors >= 1`, "ranges");
      }
      if (range.offsetSectors + range.countSectors > capacitySectors) {
        throw new ServiceError(
          "OUT_OF_RANGE",
          `${what}: range ${i} passes the end of the device (${capacitySectors} sectors)`,
          { field: "ranges" },
        );
      }
    });
    const batch = client.profile === "upstream"
      ? 1
      : Math.max(1, this.#options.dirtyBatchRanges ?? 4096);
    client.markDirty(device, ranges, batch);
  }

  /**
   * Creates a snapshot with the given devices and difference storage.
   * INVALID_ARGUMENT for bad options, NOT_FOUND for unknown devices, CONFLICT
   * when a device is in another snapshot.
   */
  async createSnapshot(options: CreateSnapshotOptions): Promise<SnapshotInfo> {
    const kernel = await this.#ready();
    const { client } = kernel;
    const what = "Cannot create the snapshot";
    const deviceIds = options?.deviceIds;
    if (!Array.isArray(deviceIds)) {
      throw invalid(`${what}: deviceIds must be an array`, "deviceIds");
    }
    if (new Set(deviceIds).size !== deviceIds.length) {
      throw invalid(`${what}: a device is listed twice`, "deviceIds");
    }
    const path = options.diffStorage?.path;
    if (typeof path !== "string" || !path.startsWith("/")) {
      throw invalid(`${what}: the difference storage path must be absolute`, "diffStorage.path");
    }
    const limitBytes = options.diffStorage.limitBytes;
    if (!Number.isSafeInteger(limitBytes) || limitBytes < SECTOR_SIZE) {
      throw invalid(`${what}: limitBytes must be an integer >= 512`, "diffStorage.limitBytes");
    }
    const validate = () => {
      for (const id of deviceIds) {
        const device = this.#device(id);
        const owner = this.#ownerOf(id);
        if (owner) {
          throw new ServiceError("CONFLICT", `${what}: device ${id} is in snapshot ${owner.id}`);
        }
        if (device.path === path) {
          throw invalid(`${what}: the storage cannot be device ${id} itself`, "diffStorage.path");
        }
      }
    };
    validate();
    const storageCreated = await createIfMissing(path, what);
    let uuid: Uint8Array;
    try {
      validate();
      uuid = client.createSnapshot(path, Math.floor(limitBytes / SECTOR_SIZE));
    } catch (error) {
      if (storageCreated) await unlink(path).catch(() => {});
      throw error;
    }
    const snapshot: SnapshotRecord = {
      id: formatUuid(uuid),
      uuid,
      deviceIds: [],
      createdAt: new Date().toISOString(),
      writable: options.writable ?? false,
      storage: { path, limitBytes },
      storageCreated,
      createdHere: true,
      images: new Set(),
    };
    try {
      for (const id of deviceIds) {
        client.addDevice(this.#device(id), uuid, `${what}: cannot add device ${id}`);
        snapshot.deviceIds.push(id);
      }
    } catch (error) {
      client.destroy(uuid);
      if (storageCreated) await unlink(path).catch(() => {});
      throw error;
    }
    this.#snapshots.set(snapshot.id, snapshot);
    this.#persist(client);
    return this.#info(kernel, snapshot);
  }

  /** Adds a device to a created snapshot. CONFLICT when taken or when the device is in one. */
  async addDevice(snapshotId: string, deviceId: string): Promise<SnapshotInfo> {
    const kernel = await this.#ready();
    const snapshot = this.#snapshot(kernel, snapshotId);
    const device = this.#device(deviceId);
    const what = `Cannot add device ${deviceId} to snapshot ${snapshot.id}`;
    const owner = this.#ownerOf(deviceId);
    if (owner) {
      const where = owner === snapshot ? "it is already in it" : `it is in snapshot ${owner.id}`;
      throw new ServiceError("CONFLICT", `${what}: ${where}`);
    }
    if (snapshot.takenAt !== undefined) {
      throw new ServiceError("CONFLICT", `${what}: the snapshot is already taken`);
    }
    kernel.client.addDevice(device, snapshot.uuid, what);
    snapshot.deviceIds.push(deviceId);
    this.#persist(kernel.client);
    return this.#info(kernel, snapshot);
  }

  /** Takes the snapshot. CONFLICT when already taken or without devices. */
  async takeSnapshot(snapshotId: string): Promise<SnapshotInfo> {
    const kernel = await this.#ready();
    const snapshot = this.#snapshot(kernel, snapshotId);
    const what = `Cannot take snapshot ${snapshot.id}`;
    if (snapshot.takenAt !== undefined) {
      throw new ServiceError("CONFLICT", `${what}: it is already taken`);
    }
    if (snapshot.storage !== undefined && snapshot.deviceIds.length === 0) {
      throw new ServiceError("CONFLICT", `${what}: it has no devices`);
    }
    try {
      kernel.client.take(snapshot.uuid, what);
    } catch (error) {
      if (isServiceError(error, "NOT_FOUND")) await this.#forget(kernel, snapshot);
      throw error;
    }
    snapshot.takenAt = new Date().toISOString();
    this.#persist(kernel.client);
    return this.#info(kernel, snapshot);
  }

  /** Every snapshot the module holds (records of vanished ones are dropped). */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    const kernel = await this.#ready();
    const listed = kernel.client.collect();
    const present = new Set(listed);
    for (const snapshot of [...this.#snapshots.values()]) {
      if (!present.has(snapshot.id)) await this.#forget(kernel, snapshot);
    }
    return listed.map((id) => this.#info(kernel, this.#snapshot(kernel, id)));
  }

  /** One snapshot. NOT_FOUND when unknown. */
  async snapshotInfo(snapshotId: string): Promise<SnapshotInfo> {
    const kernel = await this.#ready();
    return this.#info(kernel, this.#snapshot(kernel, snapshotId));
  }

  /** Destroys the snapshot and its images; the devices stay attached. */
  async destroySnapshot(snapshotId: string): Promise<void> {
    const kernel = await this.#ready();
    const snapshot = this.#snapshot(kernel, snapshotId);
    const outcome = kernel.client.destroy(snapshot.uuid);
    await this.#forget(kernel, snapshot);
    if (outcome.result < 0) {
      const name = errnoName(outcome.errno) ?? `errno ${outcome.errno}`;
      throw new ServiceError(
        outcome.errno === ENODEV ? "NOT_FOUND" : "IO",
        `Cannot destroy snapshot ${snapshot.id}: SNAPSHOT_DESTROY failed (${name})`,
        { errno: errnoName(outcome.errno) },
      );
    }
  }

  /** The next event of the snapshot, or undefined after `timeoutMs` without one. */
  async waitEvent(snapshotId: string, timeoutMs: number): Promise<SnapshotEvent | undefined> {
    const kernel = await this.#ready();
    if (!isCount(timeoutMs)) {
      throw invalid("Cannot wait for events: timeoutMs must be an integer >= 0", "timeoutMs");
    }
    const snapshot = this.#snapshot(kernel, snapshotId);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = Math.max(0, deadline - Date.now());
      const raw = await kernel.waiter.wait(snapshot.id, snapshot.uuid, left);
      if (!raw) return undefined;
      const event = decodeEvent(raw, {
        monotonicNowNs: this.#libc.monotonicNs(),
        epochNowMs: Date.now(),
        deviceIdOf: (major, minor) =>
          snapshot.deviceIds.find((id) => {
            const number = this.#devices.get(id)?.number;
            return number?.major === major && number.minor === minor;
          }),
      });
      if (event) return event;
      if (Date.now() >= deadline) return undefined;
    }
  }

  /** The image device of `deviceId` in a taken snapshot. */
  async #image(snapshotId: string, deviceId: string) {
    const kernel = await this.#ready();
    const snapshot = this.#snapshot(kernel, snapshotId);
    const what = `Cannot use the image of device ${deviceId} in snapshot ${snapshot.id}`;
    if (!snapshot.deviceIds.includes(deviceId)) {
      throw new ServiceError("NOT_FOUND", `${what}: the device is not in the snapshot`);
    }
    const info = this.#imageInfo(kernel, deviceId);
    if (info.locator === undefined) {
      throw new ServiceError("CONFLICT", `${what}: the snapshot is not taken`);
    }
    return { kernel, snapshot, path: info.locator, errorCode: info.errorCode };
  }

  /** Size in bytes of a device's image (BLKGETSIZE64 on the image device). */
  async imageSize(snapshotId: string, deviceId: string): Promise<number> {
    const { kernel, path } = await this.#image(snapshotId, deviceId);
    return kernel.client.blockDeviceSize(path, `Cannot read the size of image ${path}`);
  }

  /**
   * Reads `into.length` bytes of the image from byte `offset`. OUT_OF_RANGE
   * past the end, SNAPSHOT_CORRUPTED when the module reports an error.
   */
  async readImage(
    snapshotId: string,
    deviceId: string,
    offset: number,
    into: Uint8Array,
  ): Promise<void> {
    const { kernel, snapshot, path, errorCode } = await this.#image(snapshotId, deviceId);
    const what = `Cannot read image ${path}`;
    const corrupted = (code: number) =>
      new ServiceError(
        "SNAPSHOT_CORRUPTED",
        `${what}: the module reports the snapshot corrupted (${errnoName(code) ?? code})`,
        { errno: errnoName(code) },
      );
    if (errorCode !== 0) throw corrupted(errorCode);
    if (!isCount(offset)) throw invalid(`${what}: bad offset`, "offset");
    const size = kernel.client.blockDeviceSize(path, what);
    if (offset + into.length > size) {
      throw new ServiceError(
        "OUT_OF_RANGE",
        `${what}: bytes ${offset}..${offset + into.length} pass the end (${size} bytes)`,
      );
    }
    snapshot.images.add(path);
    try {
      await this.#images.read(path, offset, into);
    } catch (error) {
      const now = this.#imageInfo(kernel, deviceId);
      if (now.errorCode !== 0) throw corrupted(now.errorCode);
      throw error;
    }
  }

  /**
   * Destroys the snapshots this service created (unless keepSnapshotsOnClose),
   * stops the event workers and closes every fd. Devices stay attached.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#kernel) return;
    let kernel: Kernel;
    try {
      kernel = await this.#kernel;
    } catch {
      return;
    }
    kernel.waiter.close();
    if (!this.#options.keepSnapshotsOnClose) {
      for (const snapshot of [...this.#snapshots.values()]) {
        if (!snapshot.createdHere) continue;
        kernel.client.destroy(snapshot.uuid);
        await this.#forget(kernel, snapshot);
      }
    }
    await this.#images.close();
    await this.#saving.catch(() => {});
    kernel.client.close();
  }
}

/**
 * Builds a {@link KernelDriver} and starts it: detects the profile and
 * reloads the state. Rejects with UNAVAILABLE (no module: the message names
 * the missing devices), MODULE_MISMATCH or FORBIDDEN.
 */
export async function createKernelDriver(
  options: KernelDriverOptions = {},
): Promise<KernelDriver> {
  const driver = new KernelDriver(options);
  await driver.start();
  return driver;
}
