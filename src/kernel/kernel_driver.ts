/**
 * {@link KernelDriver}: the SnapshotDriver on the real blksnap module, through
 * ioctls on its control device and on the block-device filter (ABI.md).
 *
 * Behaviour:
 * - Start ({@link createKernelDriver}): take the locks (the state folder's,
 *   and the host-wide `hostLockPath`: two kernel-backend services would
 *   adopt each other's trackers), detect the profile (which control
 *   device exists, then VERSION); without a module, UNAVAILABLE naming what
 *   is missing. Then reload the state file from `stateDir`, keep what the
 *   module still has (CBTINFO per device, COLLECT for snapshots) and adopt
 *   the trackers and snapshots it has beyond that (records.ts).
 * - Devices: the id is the name given at attach or the path's base name. The
 *   path must be a block device (BLKGETSIZE64 answers; else INVALID_ARGUMENT).
 *   It is opened once (O_PATH|O_NOFOLLOW), verified by the descriptor's real
 *   path, and the module is given that real path (open_checked.ts says why); a
 *   device that is a snapshot's storage is a CONFLICT.
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
 * - Snapshots: create takes a regular file (created empty and exclusively if
 *   missing, and removed again at destroy; an existing non-empty one only
 *   with `overwrite`), a block device, or a directory (the module makes an
 *   unnamed file there), opened and verified as devices are and given to
 *   the module as `/proc/self/fd/N`; it may not be the service's own file,
 *   another snapshot's storage or an attached device; the limit is `limitBytes` rounded down to
 *   512-byte sectors. Devices are added with SNAPSHOTADD; when one fails, the
 *   new snapshot is destroyed again. Info asks SNAPSHOTINFO per device: the
 *   image device is the device directory plus the name the module reports
 *   (`imageDevicePath`; also the image's locator, unless the service serves
 *   the images over NBD: {@link KernelDriver.serveImagesAt} makes the
 *   locator the export's URI), and a non-zero error code marks the snapshot
 *   corrupted. Snapshots the
 *   module lists but the driver does not know (lost state) are adopted with
 *   no devices. Storage usage is not reported: the module does not tell it.
 *   `writable` is recorded as asked; the module's images are block devices
 *   that accept writes either way (writes to them mark both CBT tables).
 * - Events: one reader per known snapshot drains SNAPSHOT_WAIT_EVENT on a
 *   worker thread into the snapshot's event log (event_reader.ts); every
 *   waitEvents() reads that log after an id.
 * - Change tokens: CBTINFO just before and right after SNAPSHOT_TAKE gives
 *   each image's position (change_token.ts); for a snapshot adopted later,
 *   CBTINFO while the device is in it gives the same, as no other take can
 *   happen meanwhile.
 * - Images: size by BLKGETSIZE64 on the image device, data by node:fs
 *   positioned reads; SNAPSHOT_CORRUPTED once the module reports an error.
 * - close(): leaves snapshots and devices in the module, so that a restarted
 *   service adopts them and images stay readable meanwhile (with
 *   `destroySnapshotsOnClose`, destroys the snapshots this service created),
 *   closes every fd, handle and worker, and releases the locks.
 *
 * Errors follow errno.ts (the EINVAL rule is documented there).
 *
 * @module
 */

import { unlink } from "node:fs/promises";
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
  SnapshotImageInfo,
  SnapshotInfo,
  WaitEventsOptions,
} from "../driver.ts";
import {
  type CbtPosition,
  type ChangePoint,
  encodeChangeToken,
  pointOf,
  previousPoint,
} from "../change_token.ts";
import { errnoName, isServiceError, ServiceError } from "../errors.ts";
import { formatUuid, SECTOR_SIZE } from "./abi.ts";
import { type BlockingIoctl, WorkerIoctl } from "./blocking_ioctl.ts";
import { ioctlError } from "./errno.ts";
import { EventReader } from "./event_reader.ts";
import { decodeEvent } from "./events.ts";
import { ImageReader } from "./image_reader.ts";
import { type DeviceNumber, type Libc, realLibc } from "./libc.ts";
import { ModuleClient } from "./module_client.ts";
import { detectProfile } from "./profiles.ts";
import { DriverRecords, type SnapshotRecord } from "./records.ts";
import { STATE_LOCK_FILE_NAME, StateLock } from "../lock/state_lock.ts";
import { openDevice, openStorage } from "./open_checked.ts";
import { findServiceFile, sameObject } from "../store/service_files.ts";
import { removeCreated } from "../store/open_verified.ts";
import type { StoreIdentity } from "../engine/block_store.ts";
import { splitDeviceNumber } from "../store/dev_numbers.ts";
import { checkDirtyRanges, invalid, isCount } from "../argument_checks.ts";
import { checkCreateOptions, deviceName } from "./validate.ts";
import { imageExportName } from "../export_names.ts";

/** The image device of one device in a taken snapshot. */
export interface TakenImage {
  /** The snapshot's id. */
  snapshotId: string;
  /** The device's id. */
  deviceId: string;
  /** The image device's path. */
  path: string;
  /** Its size in bytes. */
  sizeBytes: number;
  /** Whether the snapshot was created writable. */
  writable: boolean;
  /** Aborted when the snapshot is destroyed (or found gone, or the driver closes). */
  ended: AbortSignal;
  /** The image's change token while the device's CBT is still the one it was taken with. */
  changeToken?: string;
  /** The token its dirty bitmap is relative to, under the same condition. */
  previousChangeToken?: string;
}

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
  /** Destroy the snapshots this service created at close() (default false: they stay in the module). */
  destroySnapshotsOnClose?: boolean;
  /** A host-wide lock file (one kernel-backend service per host); none by default. */
  hostLockPath?: string;
  /** Checks each device's path at start (the allowed prefixes); rejects with the reason to refuse it. */
  checkPath?: (path: string) => Promise<unknown>;
  /** Bytes of CBT map per CBTMAP ioctl (default 1 MiB). */
  cbtMapPieceBytes?: number;
  /** Ranges per CBTDIRTY ioctl on the out-of-tree profile (default 4096). */
  dirtyBatchRanges?: number;
  /** The longest `timeout_ms` of one SNAPSHOT_WAIT_EVENT of the event readers (default 250). */
  eventSliceMs?: number;
}

interface Kernel {
  client: ModuleClient;
  waiter: EventReader;
  locks: StateLock[];
}

/** A device's CBT position at a take: the image's point and its previous snapshot's. */
interface TakeMark {
  point: ChangePoint;
  previous?: ChangePoint;
}

const CAPABILITIES: Capability[] = [
  "cbt",
  "cbt-dirty",
  "writable-images",
  "image-read",
  "events",
  "multi-device-snapshots",
];

/** A {@link BlockingIoctl} that calls `libc.ioctl` in place: for fakes that do not block. */
function directIoctl(libc: Libc): BlockingIoctl {
  return {
    call: (fd, request, arg) => Promise.resolve(libc.ioctl(fd, request, arg)),
    close() {},
  };
}

/** The SnapshotDriver on the blksnap kernel module. Build it with {@link createKernelDriver}. */
export class KernelDriver implements SnapshotDriver {
  #libc: Libc;
  #options: KernelDriverOptions;
  #kernel?: Promise<Kernel>;
  #started?: Kernel;
  #records: DriverRecords;
  #images = new ImageReader();
  /** Identity of each snapshot's storage as opened here, by snapshot id (identity rules). */
  #storageIdentities = new Map<string, StoreIdentity>();
  #eventsSeen = 0;
  /** CBT positions at take, by snapshot id and device id. */
  #takeMarks = new Map<string, Map<string, TakeMark>>();
  /** Aborted when a snapshot is forgotten, by snapshot id (TakenImage.ended). */
  #lifetimes = new Map<string, AbortController>();
  /** The NBD URI of an export name, while the images are served over NBD. */
  #imageUri?: (exportName: string) => string;
  #closed = false;

  /** Keeps the options; nothing is opened until {@link KernelDriver.start} or the first call. */
  constructor(options: KernelDriverOptions = {}) {
    this.#libc = options.libc ?? realLibc();
    this.#options = options;
    this.#records = new DriverRecords(options.stateDir);
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
    this.#kernel ??= this.#init().catch((error) => {
      // A later call detects again (the module may be loaded by then).
      this.#kernel = undefined;
      throw error;
    });
    return this.#kernel;
  }

  #lock(): StateLock[] {
    const locks: StateLock[] = [];
    try {
      const { hostLockPath, stateDir } = this.#options;
      if (hostLockPath) {
        locks.push(StateLock.acquire(hostLockPath, "the kernel backend of this host"));
      }
      if (stateDir) {
        const path = `${stateDir.replace(/\/+$/, "")}/${STATE_LOCK_FILE_NAME}`;
        locks.push(StateLock.acquire(path, `the state folder ${stateDir}`));
      }
    } catch (error) {
      for (const lock of locks) lock.release();
      throw error;
    }
    return locks;
  }

  async #init(): Promise<Kernel> {
    const { devDir } = this.#options;
    const client = new ModuleClient(this.#libc, detectProfile(this.#libc, { devDir }), { devDir });
    let locks: StateLock[];
    try {
      locks = this.#lock();
    } catch (error) {
      client.close();
      throw error;
    }
    const blocking = this.#options.blockingIoctl ??
      (this.#options.libc === undefined
        ? new WorkerIoctl({ libraryPath: this.#options.waitLibraryPath })
        : directIoctl(this.#libc));
    const waiter = new EventReader(blocking, client.controlFd, {
      sliceMs: this.#options.eventSliceMs,
    });
    try {
      await this.#records.restore(client, this.#libc, {
        devDir,
        checkPath: this.#options.checkPath,
      });
    } catch (error) {
      waiter.close();
      client.close();
      for (const lock of locks) lock.release();
      throw error;
    }
    const kernel = { client, waiter, locks };
    for (const snapshot of this.#records.snapshots()) this.#watchEvents(kernel, snapshot);
    this.#started = kernel;
    return kernel;
  }

  /** Queues a write of the records. */
  #persist(client: ModuleClient): void {
    this.#records.persist(client.profile);
  }

  /** Resolves when every state change so far is on disk; rejects with the last write's error. */
  flushState(): Promise<void> {
    return this.#records.flush();
  }

  /**
   * The record of snapshot `id` (adopting one only the module knows), with
   * its event reader running. NOT_FOUND otherwise.
   */
  #snapshot(kernel: Kernel, id: string): SnapshotRecord {
    const snapshot = this.#records.resolveSnapshot(kernel.client, id);
    this.#watchEvents(kernel, snapshot);
    return snapshot;
  }

  /** Starts the one reader of the snapshot's kernel events (once). */
  #watchEvents({ waiter }: Kernel, snapshot: SnapshotRecord): void {
    if (waiter.watching(snapshot.id)) return;
    waiter.watch(snapshot.id, snapshot.uuid, (raw) => {
      const event = decodeEvent(raw, {
        monotonicNowNs: this.#libc.monotonicNs(),
        epochNowMs: Date.now(),
        deviceIdOf: (major, minor) =>
          snapshot.deviceIds.find((id) => {
            const number = this.#records.findDevice(id)?.number;
            return number?.major === major && number.minor === minor;
          }),
      });
      if (event) this.#eventsSeen++;
      return event;
    });
  }

  #imageInfo({ client }: Kernel, deviceId: string): SnapshotImageInfo {
    return this.#records.imageInfo(client, deviceId);
  }

  #info(kernel: Kernel, snapshot: SnapshotRecord): SnapshotInfo {
    const info = this.#records.snapshotInfo(kernel.client, snapshot);
    const uriOf = this.#imageUri;
    return {
      ...info,
      devices: info.devices.map((image) => ({
        ...image,
        ...(image.locator !== undefined
          ? {
            locator: uriOf ? uriOf(imageExportName(image.deviceId, snapshot.id)) : image.locator,
            imageDevicePath: image.locator,
          }
          : {}),
        ...this.#tokens(kernel, snapshot, image),
      })),
    };
  }

  /**
   * From now on the locator of every taken image is `uriOf(<device>@<snapshot-id>)`,
   * the NBD URI under which the service serves it (image_exports.ts), and
   * its /dev path is in `imageDevicePath`; `undefined` goes back to /dev
   * locators (no NBD).
   */
  serveImagesAt(uriOf: ((exportName: string) => string) | undefined): void {
    this.#imageUri = uriOf;
  }

  /** The signal that aborts when snapshot `id` is forgotten. */
  #lifetime(id: string): AbortSignal {
    let controller = this.#lifetimes.get(id);
    if (!controller) this.#lifetimes.set(id, controller = new AbortController());
    return controller.signal;
  }

  /** Aborts the lifetime of snapshot `id`. */
  #end(id: string): void {
    this.#lifetimes.get(id)?.abort();
    this.#lifetimes.delete(id);
  }

  /**
   * The image's tokens while the device's CBT is the one it was taken with
   * (CBTINFO now: same generation and changes number); none otherwise, as
   * its CBT contexts then mean nothing for this snapshot.
   */
  #currentTokens(
    kernel: Kernel,
    snapshot: SnapshotRecord,
    image: SnapshotImageInfo,
  ): { changeToken?: string; previousChangeToken?: string } {
    const device = this.#records.findDevice(image.deviceId);
    if (!device) return {};
    const tokens = this.#tokens(kernel, snapshot, image);
    const mark = this.#takeMarks.get(snapshot.id)?.get(image.deviceId);
    if (!mark) return {};
    let now: CbtPosition;
    try {
      now = kernel.client.cbtInfo(device);
    } catch {
      return {};
    }
    const same = now.generationId === mark.point.generationId &&
      now.changesNumber === mark.point.changeNumber;
    return same ? tokens : {};
  }

  /**
   * The change tokens of a taken image: from the CBT positions recorded at
   * take, or (a snapshot adopted from an earlier run) from CBTINFO now,
   * which is the same while the device is in the snapshot.
   */
  #tokens(
    { client }: Kernel,
    snapshot: SnapshotRecord,
    image: SnapshotImageInfo,
  ): { changeToken?: string; previousChangeToken?: string } {
    if (image.locator === undefined) return {};
    let marks = this.#takeMarks.get(snapshot.id);
    let mark = marks?.get(image.deviceId);
    if (!mark) {
      const device = this.#records.findDevice(image.deviceId);
      if (!device) return {};
      let point: ChangePoint;
      try {
        point = pointOf(image.deviceId, client.cbtInfo(device));
      } catch {
        return {};
      }
      mark = { point, previous: previousPoint(point) };
      if (!marks) this.#takeMarks.set(snapshot.id, marks = new Map());
      marks.set(image.deviceId, mark);
    }
    return {
      changeToken: encodeChangeToken(mark.point),
      ...(mark.previous ? { previousChangeToken: encodeChangeToken(mark.previous) } : {}),
    };
  }

  /** Drops the record of a snapshot the module no longer has (or just destroyed). */
  async #forget({ client, waiter }: Kernel, snapshot: SnapshotRecord): Promise<void> {
    this.#records.removeSnapshot(snapshot.id);
    const identity = this.#storageIdentities.get(snapshot.id);
    this.#storageIdentities.delete(snapshot.id);
    this.#takeMarks.delete(snapshot.id);
    this.#end(snapshot.id);
    this.#persist(client);
    await waiter.forget(snapshot.id);
    for (const path of snapshot.images) await this.#images.release(path);
    if (snapshot.storageCreated && snapshot.storage) {
      if (identity) await removeCreated(snapshot.storage.path, identity);
      else await unlink(snapshot.storage.path).catch(() => {});
    }
  }

  /**
   * CONFLICT when the storage is the service's own file, another snapshot's
   * storage, or a non-member attached device (members: INVALID_ARGUMENT).
   */
  async #refuseStorageIdentity(
    identity: StoreIdentity,
    memberIds: string[],
    what: string,
  ): Promise<void> {
    const field = "diffStorage.path";
    const own = await findServiceFile(this.#options.stateDir, identity);
    if (own) {
      throw new ServiceError(
        "CONFLICT",
        `${what}: the storage is the service's own file ${own.path}`,
        {
          field,
        },
      );
    }
    for (const [snapshotId, other] of this.#storageIdentities) {
      if (sameObject(other, identity)) {
        throw new ServiceError("CONFLICT", `${what}: snapshot ${snapshotId} uses this storage`, {
          field,
        });
      }
    }
    if (identity.kind !== "block") return;
    for (const device of this.#records.devices()) {
      if (!device.number || !sameNumber(identity.device, device.number)) continue;
      if (memberIds.includes(device.id)) {
        throw invalid(`${what}: the storage cannot be device ${device.id} itself`, field);
      }
      throw new ServiceError(
        "CONFLICT",
        `${what}: the storage is the attached device ${device.id}`,
        {
          field,
        },
      );
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
    const id = deviceName(path, options.name);
    const what = `Cannot attach ${path}`;
    if (this.#records.findDevice(id)) {
      throw new ServiceError("CONFLICT", `${what}: a device named ${id} is already attached`);
    }
    const opened = openDevice(this.#libc, path, { what, verify: options.verifyOpened });
    let capacityBytes: number;
    const number = opened.number;
    try {
      const same = (other?: DeviceNumber) =>
        other?.major === number.major && other.minor === number.minor;
      for (const device of this.#records.devices()) {
        if (device.path === path || same(device.number)) {
          throw new ServiceError("CONFLICT", `${what}: it is already attached as ${device.id}`);
        }
      }
      for (const [snapshotId, storage] of this.#storageIdentities) {
        if (storage.kind === "block" && sameNumber(storage.device, number)) {
          throw new ServiceError(
            "CONFLICT",
            `${what}: it is the difference storage of snapshot ${snapshotId}`,
            { field: "path" },
          );
        }
      }
      capacityBytes = client.blockDeviceSize(opened.procPath, what);
      // The module keeps the path and opens it again at take: give it the verified real path,
      // then check that it still names the device that was verified.
      client.attach(opened.realPath, what);
      if (!same(this.#libc.blockDeviceNumber(opened.realPath))) {
        client.detach(opened.realPath, what);
        throw new ServiceError(
          "CONFLICT",
          `${what}: the device node changed while it was being attached`,
          { field: "path" },
        );
      }
    } finally {
      opened.close();
    }
    const device = { id, path, capacityBytes, number };
    this.#records.addDevice(device);
    this.#persist(client);
    return this.#records.deviceInfo(device);
  }

  /** Stops tracking (the module drops the CBT). CONFLICT while the device is in a snapshot. */
  async detach(deviceId: string): Promise<void> {
    const { client } = await this.#ready();
    const device = this.#records.device(deviceId);
    const what = `Cannot detach device ${deviceId}`;
    const owner = this.#records.ownerOf(deviceId);
    if (owner) throw new ServiceError("CONFLICT", `${what}: it belongs to snapshot ${owner.id}`);
    client.detach(device.path, what);
    this.#records.removeDevice(deviceId);
    this.#persist(client);
  }

  /** All attached devices. */
  async listDevices(): Promise<DeviceInfo[]> {
    await this.#ready();
    return this.#records.devices().map((device) => this.#records.deviceInfo(device));
  }

  /** One attached device (a refused one with its state and error). NOT_FOUND when unknown. */
  async getDevice(deviceId: string): Promise<DeviceInfo> {
    await this.#ready();
    const device = this.#records.findDevice(deviceId) ?? this.#records.device(deviceId);
    return this.#records.deviceInfo(device);
  }

  /** CBTINFO of a device. */
  async cbtInfo(deviceId: string): Promise<CbtInfo> {
    const { client } = await this.#ready();
    return client.cbtInfo(this.#records.device(deviceId));
  }

  /** The CBT read map, `length` bytes from block `offset`. OUT_OF_RANGE past the block count. */
  async readCbtMap(
    deviceId: string,
    range: { offset: number; length: number },
  ): Promise<Uint8Array> {
    const { client } = await this.#ready();
    const device = this.#records.device(deviceId);
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
    const device = this.#records.device(deviceId);
    const what = `Cannot mark ranges of device ${deviceId} dirty`;
    if (!Array.isArray(ranges)) throw invalid(`${what}: ranges must be an array`, "ranges");
    if (ranges.length === 0) return;
    const capacitySectors = Math.floor(client.cbtInfo(device).capacityBytes / SECTOR_SIZE);
    checkDirtyRanges(ranges, capacitySectors, what);
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
    const { deviceIds, path, limitBytes, limitSectors } = checkCreateOptions(options, what);
    const validate = () => {
      for (const id of deviceIds) {
        const device = this.#records.device(id);
        const owner = this.#records.ownerOf(id);
        if (owner) {
          throw new ServiceError("CONFLICT", `${what}: device ${id} is in snapshot ${owner.id}`);
        }
        if (device.path === path) {
          throw invalid(`${what}: the storage cannot be device ${id} itself`, "diffStorage.path");
        }
      }
    };
    validate();
    const storage = await openStorage(path, {
      libc: this.#libc,
      what,
      verify: options.verifyOpened,
      overwrite: options.diffStorage.overwrite,
    });
    const storageCreated = storage.created;
    const dropStorage = async () => {
      if (storageCreated) await removeCreated(path, storage.identity);
    };
    let uuid: Uint8Array;
    try {
      validate();
      await this.#refuseStorageIdentity(storage.identity, deviceIds, what);
      // The module opens /proc/self/fd/N: the very storage that was checked.
      uuid = client.createSnapshot(storage.procPath, limitSectors);
    } catch (error) {
      await storage.close();
      await dropStorage();
      throw error;
    }
    await storage.close();
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
        client.addDevice(this.#records.device(id), uuid, `${what}: cannot add device ${id}`);
        snapshot.deviceIds.push(id);
      }
    } catch (error) {
      client.destroy(uuid);
      await dropStorage();
      throw error;
    }
    this.#storageIdentities.set(snapshot.id, storage.identity);
    this.#records.addSnapshot(snapshot);
    this.#watchEvents(kernel, snapshot);
    this.#persist(client);
    return this.#info(kernel, snapshot);
  }

  /** Adds a device to a created snapshot. CONFLICT when taken or when the device is in one. */
  async addDevice(snapshotId: string, deviceId: string): Promise<SnapshotInfo> {
    const kernel = await this.#ready();
    const snapshot = this.#snapshot(kernel, snapshotId);
    const device = this.#records.device(deviceId);
    const what = `Cannot add device ${deviceId} to snapshot ${snapshot.id}`;
    const owner = this.#records.ownerOf(deviceId);
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
    const devices = snapshot.deviceIds.flatMap((id) => this.#records.findDevice(id) ?? []);
    // CBTINFO around the take is best effort: without it the tokens come from CBTINFO later.
    const cbtInfo = (device: (typeof devices)[number]) => {
      try {
        return kernel.client.cbtInfo(device);
      } catch {
        return undefined;
      }
    };
    const before = new Map<string, CbtPosition | undefined>();
    for (const device of devices) before.set(device.id, cbtInfo(device));
    try {
      kernel.client.take(snapshot.uuid, what);
    } catch (error) {
      if (isServiceError(error, "NOT_FOUND")) await this.#forget(kernel, snapshot);
      throw error;
    }
    const marks = new Map<string, TakeMark>();
    for (const device of devices) {
      const after = cbtInfo(device);
      if (!after) continue;
      const point = pointOf(device.id, after);
      marks.set(device.id, { point, previous: previousPoint(point, before.get(device.id)) });
    }
    this.#takeMarks.set(snapshot.id, marks);
    snapshot.takenAt = new Date().toISOString();
    this.#persist(kernel.client);
    return this.#info(kernel, snapshot);
  }

  /** Every snapshot the module holds (records of vanished ones are dropped). */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    const kernel = await this.#ready();
    const listed = kernel.client.collect();
    const present = new Set(listed);
    for (const snapshot of this.#records.snapshots()) {
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
      throw ioctlError({
        what: `Cannot destroy snapshot ${snapshot.id}`,
        request: outcome.request,
        requestName: "SNAPSHOT_DESTROY",
        errno: outcome.errno,
      });
    }
  }

  /**
   * The events of the snapshot's log after `options.after` (see
   * SnapshotDriver.waitEvents), read from the module by the snapshot's one
   * reader. INVALID_ARGUMENT for a bad timeout or id, NOT_FOUND for an
   * unknown snapshot or one destroyed meanwhile, the mapped errno when the
   * module's wait fails.
   */
  async waitEvents(snapshotId: string, options: WaitEventsOptions): Promise<EventPage> {
    const kernel = await this.#ready();
    if (!isCount(options?.timeoutMs)) {
      throw invalid("Cannot wait for events: timeoutMs must be an integer >= 0", "timeoutMs");
    }
    if (options.after !== undefined && !isCount(options.after)) {
      throw invalid("Cannot wait for events: after must be an integer >= 0", "after");
    }
    const snapshot = this.#snapshot(kernel, snapshotId);
    return await kernel.waiter.wait(snapshot.id, options);
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
    snapshot.images.add(path);
    const size = this.#images.size(path, () => kernel.client.blockDeviceSize(path, what));
    if (offset + into.length > size) {
      throw new ServiceError(
        "OUT_OF_RANGE",
        `${what}: bytes ${offset}..${offset + into.length} pass the end (${size} bytes)`,
      );
    }
    try {
      await this.#images.read(path, offset, into);
    } catch (error) {
      const now = this.#imageInfo(kernel, deviceId);
      if (now.errorCode !== 0) throw corrupted(now.errorCode);
      throw error;
    }
  }

  /**
   * The image devices of every taken snapshot, now (synchronous, for the NBD
   * export provider's handshakes); empty before start and after close.
   * Images whose device cannot be measured (gone meanwhile) are left out.
   */
  takenImages(): TakenImage[] {
    const kernel = this.#started;
    if (!kernel || this.#closed) return [];
    const images: TakenImage[] = [];
    for (const snapshot of this.#records.snapshots()) {
      if (snapshot.takenAt === undefined) continue;
      for (const deviceId of snapshot.deviceIds) {
        try {
          const image = this.#imageInfo(kernel, deviceId);
          const path = image.locator;
          if (path === undefined) continue;
          const what = `Cannot read the size of image ${path}`;
          const sizeBytes = this.#images.size(
            path,
            () => kernel.client.blockDeviceSize(path, what),
          );
          snapshot.images.add(path);
          images.push({
            snapshotId: snapshot.id,
            deviceId,
            path,
            sizeBytes,
            writable: snapshot.writable,
            ended: this.#lifetime(snapshot.id),
            ...this.#currentTokens(kernel, snapshot, image),
          });
        } catch {
          continue;
        }
      }
    }
    return images;
  }

  /**
   * Counters for metrics: the events this driver received. Copy-on-write and
   * storage counters stay inside the module, so they are absent.
   */
  async stats(): Promise<DriverStats> {
    await this.#ready();
    return { events: this.#eventsSeen };
  }

  /**
   * Stops the event workers, closes every fd and releases the locks.
   * Snapshots and devices stay in the module (with destroySnapshotsOnClose,
   * the snapshots this service created are destroyed).
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
    for (const id of [...this.#lifetimes.keys()]) this.#end(id);
    if (this.#options.destroySnapshotsOnClose) {
      for (const snapshot of this.#records.snapshots()) {
        if (!snapshot.createdHere) continue;
        kernel.client.destroy(snapshot.uuid);
        await this.#forget(kernel, snapshot);
      }
    }
    await this.#images.close();
    await this.#records.flush().catch(() => {});
    kernel.client.close();
    for (const lock of kernel.locks) lock.release();
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

/** True when `rdev` (a dev_t) is the device `number`. */
function sameNumber(rdev: number, number: DeviceNumber): boolean {
  const split = splitDeviceNumber(rdev);
  return split.major === number.major && split.minor === number.minor;
}
