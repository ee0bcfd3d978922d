/**
 * What the kernel driver knows about devices and snapshots beyond what the
 * module reports: names, paths, the order devices were added, creation and
 * take times, the storage given at create. Kept in memory, written to the
 * state file after every change (when there is a state directory), and
 * checked against the module when a driver starts (state_file.ts). It also
 * joins them with the module's SNAPSHOTINFO answers into the driver's views.
 *
 * Adoption at start, with or without a state file: every block device in
 * the device directory that answers CBTINFO is a tracker of the module and
 * is adopted (named after its node) unless the state names it already;
 * every snapshot COLLECT lists is kept (with its saved record) or adopted.
 * An adopted snapshot's devices are known only when it is the one snapshot
 * of the module: then they are the trackers whose SNAPSHOTINFO shows an
 * image or that the state file put in no other snapshot (SNAPSHOTINFO does
 * not name the snapshot, so with several snapshots and no state file the
 * devices cannot be attributed). Snapshot image devices and optical or
 * floppy drives are not probed. A device whose path the current allowed
 * prefixes refuse stays listed as "refused" (the module keeps tracking it)
 * and every call naming it answers UNAVAILABLE.
 *
 * @module
 */

import type { DeviceInfo, KernelProfile, SnapshotImageInfo, SnapshotInfo } from "../driver.ts";
import { errnoName, isServiceError, ServiceError } from "../errors.ts";
import { parseUuid } from "./abi.ts";
import type { DeviceNumber, Libc } from "./libc.ts";
import type { ModuleClient } from "./module_client.ts";
import { loadState, type PersistedSnapshot, saveState } from "./state_file.ts";

const ENODEV = 19;

/** An attached device. */
export interface DeviceRecord {
  /** Device id (name). */
  id: string;
  /** Path it was attached from. */
  path: string;
  /** Capacity in bytes. */
  capacityBytes: number;
  /** Its device number, to name the device of a corrupted event. */
  number?: DeviceNumber;
  /** Why the service refuses to use it (its path is outside the allowed prefixes now). */
  refused?: string;
}

/** Options of {@link DriverRecords.restore}. */
export interface RestoreOptions {
  /** Directory of device nodes to look for trackers in (default /dev). */
  devDir?: string;
  /** Checks a device's path (the allowed prefixes); rejects with the reason to refuse it. */
  checkPath?: (path: string) => Promise<unknown>;
}

/** A snapshot the driver knows. */
export interface SnapshotRecord extends PersistedSnapshot {
  /** The id's 16 bytes, as the module takes them. */
  uuid: Uint8Array;
  /** Made by this driver instance (close() destroys those); false for restored and adopted ones. */
  createdHere: boolean;
  /** Image device paths read through the image reader, released at destroy. */
  images: Set<string>;
}

/** The driver's records and their state file. */
export class DriverRecords {
  #stateDir?: string;
  #devices = new Map<string, DeviceRecord>();
  #snapshots = new Map<string, SnapshotRecord>();
  #saving: Promise<void> = Promise.resolve();

  /** Records kept in memory, and in `stateDir` when given. */
  constructor(stateDir?: string) {
    this.#stateDir = stateDir;
  }

  /**
   * Loads the state file and keeps what the module still has: devices that
   * answer CBTINFO, snapshots that COLLECT lists (restored as not created
   * here). INTERNAL when the file is unreadable.
   */
  async restore(client: ModuleClient, libc: Libc, options: RestoreOptions = {}): Promise<void> {
    const devDir = options.devDir ?? "/dev";
    const state = this.#stateDir === undefined ? undefined : await loadState(this.#stateDir);
    for (const saved of state?.devices ?? []) {
      const device: DeviceRecord = { ...saved, number: libc.blockDeviceNumber(saved.path) };
      try {
        device.capacityBytes = client.cbtInfo(device).capacityBytes;
        this.#devices.set(device.id, device);
      } catch (error) {
        if (!isServiceError(error, "NOT_FOUND")) throw error;
      }
    }
    this.#adoptTrackers(client, libc, devDir);
    if (options.checkPath) {
      for (const device of this.#devices.values()) {
        try {
          await options.checkPath(device.path);
        } catch (error) {
          device.refused = (error as Error).message;
        }
      }
    }
    const listed = client.collect();
    for (const saved of state?.snapshots ?? []) {
      const uuid = parseUuid(saved.id);
      if (!uuid || !listed.includes(saved.id)) continue;
      const deviceIds = saved.deviceIds.filter((id) => this.#devices.has(id));
      this.#snapshots.set(saved.id, {
        ...saved,
        deviceIds,
        uuid,
        createdHere: false,
        images: new Set(),
      });
    }
    for (const id of listed) {
      const uuid = parseUuid(id);
      if (!uuid || this.#snapshots.has(id)) continue;
      const deviceIds = listed.length === 1 ? this.#devicesWithImages(client) : [];
      this.#snapshots.set(id, {
        id,
        uuid,
        deviceIds,
        createdAt: new Date().toISOString(),
        writable: false,
        createdHere: false,
        images: new Set(),
      });
    }
    this.persist(client.profile);
  }

  /** Adopts every block device of `devDir` the module tracks and the records do not name. */
  #adoptTrackers(client: ModuleClient, libc: Libc, devDir: string): void {
    let names: string[];
    try {
      // Links (/dev/cdrom, /dev/disk/...) name nodes listed under their own names already.
      names = [...Deno.readDirSync(devDir)].filter((entry) => !entry.isSymlink)
        .map((entry) => entry.name).sort();
    } catch {
      return;
    }
    const known = (path: string, number: DeviceNumber) =>
      [...this.#devices.values()].some((d) =>
        d.path === path || (d.number?.major === number.major && d.number.minor === number.minor)
      );
    for (const name of names) {
      if (/^(sr|fd)\d|^blksnap-|^veeamblksnap|^bdevfilter/.test(name)) continue;
      const path = `${devDir.replace(/\/+$/, "")}/${name}`;
      const number = libc.blockDeviceNumber(path);
      if (!number || known(path, number) || this.#devices.has(name)) continue;
      const device: DeviceRecord = { id: name, path, capacityBytes: 0, number };
      try {
        device.capacityBytes = client.cbtInfo(device).capacityBytes;
      } catch {
        continue;
      }
      this.#devices.set(name, device);
    }
  }

  /** Ids of the devices in no known snapshot whose SNAPSHOTINFO shows an image. */
  #devicesWithImages(client: ModuleClient): string[] {
    return [...this.#devices.values()].filter((device) => {
      if (this.ownerOf(device.id)) return false;
      try {
        return client.snapshotState(device).image !== undefined;
      } catch {
        return false;
      }
    }).map((device) => device.id);
  }

  /** Queues a write of the current records (when there is a state directory). */
  persist(profile: KernelProfile): void {
    const dir = this.#stateDir;
    if (dir === undefined) return;
    const devices = [...this.#devices.values()].map(({ id, path, capacityBytes }) => ({
      id,
      path,
      capacityBytes,
    }));
    const snapshots = [...this.#snapshots.values()].map(
      ({ uuid: _uuid, images: _images, createdHere: _createdHere, ...saved }) => saved,
    );
    const write = () => saveState(dir, { version: 1, profile, devices, snapshots });
    this.#saving = this.#saving.then(write, write);
    // A failed write must not become an unhandled rejection; flush() still reports it.
    this.#saving.catch((error: Error) => console.error(`blksnap kernel driver: ${error.message}`));
  }

  /** Resolves when every queued write is done; rejects with the last write's error. */
  flush(): Promise<void> {
    return this.#saving;
  }

  /** The device `id`. NOT_FOUND when it is not attached. */
  device(id: string): DeviceRecord {
    const device = this.#devices.get(id);
    if (!device) throw new ServiceError("NOT_FOUND", `Device ${id} is not attached`);
    if (device.refused) {
      throw new ServiceError(
        "UNAVAILABLE",
        `Device ${id} (${device.path}) is refused: ${device.refused}`,
      );
    }
    return device;
  }

  /** The device `id`, or undefined. */
  findDevice(id: string): DeviceRecord | undefined {
    return this.#devices.get(id);
  }

  /** Every attached device, in attach order. */
  devices(): DeviceRecord[] {
    return [...this.#devices.values()];
  }

  /** Records an attached device. */
  addDevice(device: DeviceRecord): void {
    this.#devices.set(device.id, device);
  }

  /** Forgets a device. */
  removeDevice(id: string): void {
    this.#devices.delete(id);
  }

  /** The snapshot holding device `id`, if any. */
  ownerOf(id: string): SnapshotRecord | undefined {
    for (const snapshot of this.#snapshots.values()) {
      if (snapshot.deviceIds.includes(id)) return snapshot;
    }
    return undefined;
  }

  /** The driver's view of a device. */
  deviceInfo(device: DeviceRecord): DeviceInfo {
    return {
      id: device.id,
      path: device.path,
      capacityBytes: device.capacityBytes,
      snapshotId: this.ownerOf(device.id)?.id,
      locator: device.path,
      ...(device.refused ? { state: "refused" as const, error: device.refused } : {}),
    };
  }

  /** The snapshot with lower-case id `id`, or undefined. */
  findSnapshot(id: string): SnapshotRecord | undefined {
    return this.#snapshots.get(id);
  }

  /** Every known snapshot. */
  snapshots(): SnapshotRecord[] {
    return [...this.#snapshots.values()];
  }

  /** Records a snapshot. */
  addSnapshot(snapshot: SnapshotRecord): void {
    this.#snapshots.set(snapshot.id, snapshot);
  }

  /** Forgets a snapshot. */
  removeSnapshot(id: string): void {
    this.#snapshots.delete(id);
  }

  /**
   * The record of snapshot `id` (any case). A snapshot that COLLECT lists but
   * the records do not know (made by another tool, or state lost) is adopted
   * with no devices. NOT_FOUND otherwise.
   */
  resolveSnapshot(client: ModuleClient, id: string): SnapshotRecord {
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
      this.persist(client.profile);
      return adopted;
    }
    throw new ServiceError("NOT_FOUND", `Snapshot ${id} does not exist`);
  }

  /**
   * SNAPSHOTINFO of device `id` as the driver reports it: its image locator
   * and error; a device that is gone reports ENODEV.
   */
  imageInfo(client: ModuleClient, id: string): SnapshotImageInfo {
    const device = this.#devices.get(id);
    const gone = { deviceId: id, errorCode: ENODEV, errorName: "ENODEV" };
    if (!device) return gone;
    try {
      const state = client.snapshotState(device);
      return {
        deviceId: id,
        locator: state.locator,
        errorCode: state.errorCode,
        errorName: state.errorCode ? errnoName(state.errorCode) ?? "EIO" : undefined,
      };
    } catch (error) {
      if (!isServiceError(error, "NOT_FOUND")) throw error;
      return gone;
    }
  }

  /**
   * The driver's view of a snapshot: corrupted when a device reports an
   * error, taken once taken here or once the module shows an image.
   */
  snapshotInfo(client: ModuleClient, snapshot: SnapshotRecord): SnapshotInfo {
    const devices = snapshot.deviceIds.map((id) => this.imageInfo(client, id));
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
}
