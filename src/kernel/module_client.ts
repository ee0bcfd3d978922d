/**
 * The blksnap module's requests as typed calls: each one encodes its
 * argument with the layouts of abi.ts, sends it to the control device or
 * through the profile's filter channel, maps a failure to a ServiceError
 * (errno.ts, with the EINVAL reading each request needs) and decodes the
 * answer. No policy and no records: that is the driver's job.
 *
 * @module
 */

import type { CbtInfo, KernelProfile, SectorRange } from "../driver.ts";
import { isServiceError, ServiceError } from "../errors.ts";
import {
  BlkfilterCtlBlksnap,
  BLKGETSIZE64,
  BlksnapCbtdirty,
  BlksnapCbtinfo,
  BlksnapCbtmap,
  BlksnapSectors,
  BlksnapSnapshotadd,
  BlksnapSnapshotCollect,
  BlksnapSnapshotCreate,
  BlksnapSnapshotinfo,
  BlksnapUuid,
  BlockDeviceSize,
  filterCommandName,
  formatUuid,
  IOCTL_BLKSNAP_SNAPSHOT_COLLECT,
  IOCTL_BLKSNAP_SNAPSHOT_CREATE,
  IOCTL_BLKSNAP_SNAPSHOT_DESTROY,
  IOCTL_BLKSNAP_SNAPSHOT_TAKE,
  requestName,
} from "./abi.ts";
import { type EinvalMeaning, ioctlError, KernelErrno, openError } from "./errno.ts";
import { cStringBytes, type Libc, OpenFlags, type SyscallResult } from "./libc.ts";
import { type DetectedProfile, devicePath, type FilterResult } from "./profiles.ts";

/** A tracked device as the client needs it: its id for messages and its path. */
export interface DeviceRef {
  /** Device id. */
  id: string;
  /** Device path. */
  path: string;
}

/** SNAPSHOTINFO of one device. */
export interface DeviceSnapshotState {
  /** 0, or the positive errno that corrupted the image. */
  errorCode: number;
  /** The image's disk name, once taken. */
  image?: string;
  /** Where the image device is (device directory + name), once taken. */
  locator?: string;
}

const { EALREADY, EINVAL, ENODATA, ENODEV, ENOENT, ENOTBLK, ENOTTY, ENXIO } = KernelErrno;
const Cmd = BlkfilterCtlBlksnap;
/** BLKGETSIZE64 answers on something that is not a block device. */
const NOT_A_BLOCK_DEVICE = new Set<number>([ENOTTY, EINVAL, ENOTBLK]);
/** Detach answers when there is nothing (left) to detach. */
const NOTHING_TO_DETACH = new Set<number>([ENOENT, ENXIO, ENODEV]);

/** Raises the mapped error for a failed request; `einval` tells how EINVAL reads. */
function check(
  outcome: SyscallResult & { request: number },
  what: string,
  options: { einval?: EinvalMeaning; command?: number } = {},
): void {
  if (outcome.result >= 0) return;
  const base = requestName(outcome.request) ?? "ioctl";
  const { command } = options;
  const name = command === undefined ? base : `${base}(${filterCommandName(command) ?? command})`;
  throw ioctlError({
    what,
    request: outcome.request,
    requestName: name,
    errno: outcome.errno,
    einval: options.einval,
  });
}

/** Keeps buffers whose addresses went to the kernel reachable until after the call. */
function retain(..._buffers: Uint8Array[]): void {}

/** Typed requests to the detected module. */
export class ModuleClient {
  #libc: Libc;
  #kernel: DetectedProfile;
  #devDir?: string;

  constructor(libc: Libc, kernel: DetectedProfile, options: { devDir?: string } = {}) {
    this.#libc = libc;
    this.#kernel = kernel;
    this.#devDir = options.devDir;
  }

  /** The detected profile. */
  get profile(): KernelProfile {
    return this.#kernel.profile;
  }

  /** VERSION as "major.minor.revision.build". */
  get moduleVersion(): string {
    return this.#kernel.moduleVersion;
  }

  /** The open control device. */
  get controlFd(): number {
    return this.#kernel.controlFd;
  }

  #ctl(
    device: DeviceRef,
    cmd: number,
    opt: Uint8Array,
    what: string,
    einval?: EinvalMeaning,
  ): void {
    let outcome: FilterResult;
    try {
      outcome = this.#kernel.filter.ctl(device.path, cmd, opt);
    } catch (error) {
      if (!isServiceError(error, "NOT_FOUND")) throw error;
      throw new ServiceError(
        "NOT_FOUND",
        `${what}: device ${device.id} is gone (${error.message})`,
        {
          errno: error.errno,
          cause: error,
        },
      );
    }
    if (outcome.result < 0 && outcome.errno === ENOENT) {
      throw new ServiceError(
        "NOT_FOUND",
        `${what}: the module does not track ${device.path} (detached outside the service, ` +
          `or the module was reloaded)`,
        { errno: "ENOENT" },
      );
    }
    check(outcome, what, { einval, command: cmd });
  }

  /**
   * Size in bytes of the block device at `path` (BLKGETSIZE64). NOT_FOUND when
   * it does not exist, INVALID_ARGUMENT when it is not a block device.
   */
  blockDeviceSize(path: string, what: string): number {
    const opened = this.#libc.open(path, OpenFlags.O_RDONLY | OpenFlags.O_CLOEXEC);
    if (opened.result < 0) throw openError(opened.errno, what, path);
    try {
      const arg = new Uint8Array(BlockDeviceSize.size);
      const outcome = this.#libc.ioctl(opened.result, BLKGETSIZE64, arg);
      if (outcome.result < 0 && NOT_A_BLOCK_DEVICE.has(outcome.errno)) {
        throw new ServiceError("INVALID_ARGUMENT", `${what}: ${path} is not a block device`, {
          field: "path",
        });
      }
      check({ ...outcome, request: BLKGETSIZE64 }, what);
      return BlockDeviceSize.decode(arg).bytes;
    } finally {
      this.#libc.close(opened.result);
    }
  }

  /**
   * Attaches the blksnap filter to `path`. Resolves to true when the module
   * already tracked it with blksnap (EALREADY: adopted, CBT kept). CONFLICT
   * when another filter owns it (EBUSY); MODULE_MISMATCH for ENOTTY, EINVAL or
   * no registered "blksnap" filter (ENOENT).
   */
  attach(path: string, what: string): boolean {
    const outcome = this.#kernel.filter.attach(path);
    if (outcome.result >= 0) return false;
    if (outcome.errno === EALREADY) return true;
    if (outcome.errno === ENOENT) {
      throw new ServiceError(
        "MODULE_MISMATCH",
        `${what}: no block-device filter named "blksnap" is registered (ENOENT)`,
        { errno: "ENOENT" },
      );
    }
    check(outcome, what);
    return false;
  }

  /**
   * Detaches the filter from `path`. Resolves to false when the module no
   * longer tracked the device or the device is gone (nothing to detach).
   * CONFLICT when another filter owns it.
   */
  detach(path: string, what: string): boolean {
    let outcome: FilterResult;
    try {
      outcome = this.#kernel.filter.detach(path);
    } catch (error) {
      if (isServiceError(error, "NOT_FOUND")) return false;
      throw error;
    }
    if (outcome.result < 0 && NOTHING_TO_DETACH.has(outcome.errno)) return false;
    check(outcome, what, { einval: "conflict" });
    return true;
  }

  /** CBTINFO of `device`. NOT_FOUND when the module does not track it. */
  cbtInfo(device: DeviceRef): CbtInfo {
    const opt = new Uint8Array(BlksnapCbtinfo.size);
    const what = `Cannot read the CBT info of device ${device.id}`;
    this.#ctl(device, Cmd.BLKFILTER_CTL_BLKSNAP_CBTINFO, opt, what);
    const info = BlksnapCbtinfo.decode(opt);
    return {
      capacityBytes: info.device_capacity,
      blockSizeBytes: info.block_size,
      blockCount: info.block_count,
      generationId: formatUuid(info.generation_id.b),
      changesNumber: info.changes_number,
    };
  }

  /**
   * `length` bytes of the CBT read map from block `offset`, read with one
   * CBTMAP per `pieceBytes`. The caller has checked the range.
   */
  readCbtMap(device: DeviceRef, offset: number, length: number, pieceBytes: number): Uint8Array {
    const what = `Cannot read the CBT map of device ${device.id}`;
    const out = new Uint8Array(length);
    const piece = new Uint8Array(Math.min(Math.max(1, pieceBytes), length));
    for (let done = 0; done < length;) {
      const count = Math.min(piece.length, length - done);
      const opt = BlksnapCbtmap.encode({
        offset: offset + done,
        length: count,
        buffer: this.#libc.pointerOf(piece),
      });
      this.#ctl(device, Cmd.BLKFILTER_CTL_BLKSNAP_CBTMAP, opt, what);
      retain(piece);
      out.set(piece.subarray(0, count), done);
      done += count;
    }
    return out;
  }

  /** Marks `ranges` dirty with CBTDIRTY, `batch` ranges per request. */
  markDirty(device: DeviceRef, ranges: SectorRange[], batch: number): void {
    const what = `Cannot mark ranges of device ${device.id} dirty`;
    for (let start = 0; start < ranges.length; start += batch) {
      const slice = ranges.slice(start, start + batch);
      const sectors = new Uint8Array(slice.length * BlksnapSectors.size);
      slice.forEach((range, i) =>
        BlksnapSectors.encode(
          { offset: range.offsetSectors, count: range.countSectors },
          sectors,
          i * BlksnapSectors.size,
        )
      );
      const opt = BlksnapCbtdirty.encode({
        count: slice.length,
        dirty_sectors: this.#libc.pointerOf(sectors),
      });
      this.#ctl(device, Cmd.BLKFILTER_CTL_BLKSNAP_CBTDIRTY, opt, what, "argument");
      retain(sectors);
    }
  }

  /** SNAPSHOTINFO of `device`: its error code and image. */
  snapshotState(device: DeviceRef): DeviceSnapshotState {
    const opt = new Uint8Array(BlksnapSnapshotinfo.size);
    const what = `Cannot read the snapshot state of device ${device.id}`;
    this.#ctl(device, Cmd.BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO, opt, what);
    const info = BlksnapSnapshotinfo.decode(opt);
    return {
      errorCode: Math.abs(info.error_code),
      image: info.image || undefined,
      locator: info.image ? devicePath(info.image, { devDir: this.#devDir }) : undefined,
    };
  }

  /**
   * SNAPSHOT_CREATE with the storage at `path` and a limit in sectors; the new
   * snapshot's 16 id bytes. INVALID_ARGUMENT when the module refuses the
   * storage (EINVAL), NOT_FOUND when it does not exist.
   */
  createSnapshot(path: string, limitSectors: number): Uint8Array {
    const filename = cStringBytes(path);
    const arg = BlksnapSnapshotCreate.encode({
      diff_storage_limit_sect: limitSectors,
      diff_storage_filename: this.#libc.pointerOf(filename),
      id: { b: new Uint8Array(16) },
    });
    const outcome = this.#libc.ioctl(this.controlFd, IOCTL_BLKSNAP_SNAPSHOT_CREATE, arg);
    retain(filename);
    check(
      { ...outcome, request: IOCTL_BLKSNAP_SNAPSHOT_CREATE },
      `Cannot create a snapshot with the difference storage ${path}`,
      { einval: "argument" },
    );
    return BlksnapSnapshotCreate.decode(arg).id.b.slice();
  }

  /** SNAPSHOTADD: adds `device` to the snapshot `uuid`. NOT_FOUND for an unknown snapshot. */
  addDevice(device: DeviceRef, uuid: Uint8Array, what: string): void {
    const opt = BlksnapSnapshotadd.encode({ id: { b: uuid } });
    try {
      this.#ctl(device, Cmd.BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD, opt, what);
    } catch (error) {
      if (isServiceError(error) && error.errno === "ESRCH") {
        throw new ServiceError("NOT_FOUND", `${what}: the module has no such snapshot (ESRCH)`, {
          errno: "ESRCH",
        });
      }
      throw error;
    }
  }

  /**
   * SNAPSHOT_TAKE. CONFLICT when already taken (EALREADY) or without devices
   * (ENODEV); NOT_FOUND for an unknown snapshot (ESRCH).
   */
  take(uuid: Uint8Array, what: string): void {
    const arg = BlksnapUuid.encode({ b: uuid });
    const outcome = this.#libc.ioctl(this.controlFd, IOCTL_BLKSNAP_SNAPSHOT_TAKE, arg);
    if (outcome.result < 0 && outcome.errno === ENODEV) {
      throw new ServiceError("CONFLICT", `${what}: the module has no devices in it (ENODEV)`, {
        errno: "ENODEV",
      });
    }
    check({ ...outcome, request: IOCTL_BLKSNAP_SNAPSHOT_TAKE }, what);
  }

  /** SNAPSHOT_DESTROY; the raw outcome (ENODEV: no such snapshot). */
  destroy(uuid: Uint8Array): SyscallResult & { request: number } {
    const arg = BlksnapUuid.encode({ b: uuid });
    const outcome = this.#libc.ioctl(this.controlFd, IOCTL_BLKSNAP_SNAPSHOT_DESTROY, arg);
    return { ...outcome, request: IOCTL_BLKSNAP_SNAPSHOT_DESTROY };
  }

  /** The ids of every snapshot the module holds (COLLECT, asked until the array fits). */
  collect(): string[] {
    const what = "Cannot list the module's snapshots";
    let capacity = 0;
    for (let attempt = 0; attempt < 8; attempt++) {
      const ids = new Uint8Array(capacity * BlksnapUuid.size);
      const arg = BlksnapSnapshotCollect.encode({
        count: capacity,
        ids: capacity === 0 ? 0 : this.#libc.pointerOf(ids),
      });
      const outcome = this.#libc.ioctl(this.controlFd, IOCTL_BLKSNAP_SNAPSHOT_COLLECT, arg);
      retain(ids);
      const { count } = BlksnapSnapshotCollect.decode(arg);
      if (outcome.result < 0 && outcome.errno !== ENODATA) {
        check({ ...outcome, request: IOCTL_BLKSNAP_SNAPSHOT_COLLECT }, what);
      }
      if (outcome.result >= 0 && (capacity > 0 || count === 0)) {
        return Array.from(
          { length: Math.min(count, capacity) },
          (_, i) => formatUuid(ids.subarray(i * 16, i * 16 + 16)),
        );
      }
      capacity = outcome.result < 0 ? Math.max(count, capacity) * 2 + 4 : count + 4;
    }
    throw new ServiceError("CONFLICT", `${what}: the list kept changing while it was read`);
  }

  /** Closes the filter channel and the control device. */
  close(): void {
    this.#kernel.filter.close();
    this.#libc.close(this.#kernel.controlFd);
  }
}
