/**
 * Consistent takes around any backend: {@link ConsistentDriver} wraps a
 * SnapshotDriver and, for `takeSnapshot`, runs the pre hooks, freezes every
 * file system mounted on the snapshot's devices, takes, thaws, and runs the
 * post hooks; everything else passes straight through.
 *
 * Design note (the order is what makes an application-consistent image):
 * 1. pre hooks (a failure aborts: nothing frozen, nothing taken, post hooks
 *    run with result `aborted`);
 * 2. discovery: per device, the block devices on it (itself, its
 *    partitions, their holders; for the userspace backend the /dev/nbdX of
 *    this host connected to its export) and the mounts of those in
 *    /proc/self/mountinfo, one per file system;
 * 3. FIFREEZE on each, just before the switch. A file system frozen by
 *    someone else (EBUSY) or that cannot freeze is reported and left alone;
 * 4. the backend's take, under a watchdog: when `maxFreezeMs` passes first,
 *    everything is thawed at once (writers must not hang on a stuck take)
 *    and the report says `thawedEarly`;
 * 5. FITHAW on each frozen file system, in reverse order, whatever the take
 *    did (finally), each thaw on its own so that one failure does not keep
 *    another frozen;
 * 6. post hooks (result `taken` or `failed`), whose failures are logged.
 * The report is kept per snapshot and added to its SnapshotInfo until destroy.
 *
 * @module
 */

import type {
  ConsistencyReport,
  FrozenFilesystem,
  SnapshotDriver,
  SnapshotInfo,
  TakeOptions,
} from "../driver.ts";
import { isServiceError } from "../errors.ts";
import { type DeviceNumber, realLibc } from "../kernel/libc.ts";
import { blockName, devicesOn, type SystemTree, treeAt } from "./block_topology.ts";
import type { FsFreezer } from "./fs_freezer.ts";
import { HookFailedError, type HookRun, Hooks } from "./hooks.ts";
import { type MountEntry, readMountinfo } from "./mountinfo.ts";
import { type ExportIdentity, nbdDevicesFor } from "./nbd_attachments.ts";

/** Default bound on the time file systems stay frozen. */
export const DEFAULT_MAX_FREEZE_MS = 10_000;

/** Options of {@link ConsistentDriver}. */
export interface ConsistencyOptions {
  /** Freezes and thaws file systems. */
  freezer: FsFreezer;
  /** The take hooks, if any. */
  hooks?: Hooks;
  /** The longest file systems stay frozen (default {@link DEFAULT_MAX_FREEZE_MS}). */
  maxFreezeMs?: number;
  /** Where freeze and hook events are logged. */
  log?: (line: string) => void;
  /** sysfs (default /sys). */
  sys?: SystemTree;
  /** procfs (default /proc). */
  proc?: SystemTree;
  /** The mount table (default /proc/self/mountinfo). */
  mounts?: () => Promise<MountEntry[]>;
  /** Major and minor of a block device path (default libc's stat; the fake kernel has its own). */
  deviceNumber?: (path: string) => DeviceNumber | undefined;
}

/** A file system to freeze for a device. */
interface FreezeTarget {
  deviceId: string;
  mount: MountEntry;
  blockDevice: string;
  state: FrozenFilesystem;
  frozenAt?: number;
}

/** A SnapshotDriver whose takes freeze file systems and run hooks. */
export class ConsistentDriver implements SnapshotDriver {
  readonly #inner: SnapshotDriver;
  readonly #options: ConsistencyOptions;
  readonly #reports = new Map<string, ConsistencyReport>();
  readonly #sys: SystemTree;
  readonly #proc: SystemTree;
  readonly #log: (line: string) => void;

  /** Wraps `inner`. */
  constructor(inner: SnapshotDriver, options: ConsistencyOptions) {
    this.#inner = inner;
    this.#options = options;
    this.#sys = options.sys ?? treeAt("/sys");
    this.#proc = options.proc ?? treeAt("/proc");
    this.#log = options.log ?? ((line) => console.error(line));
  }

  /** The wrapped driver. */
  get inner(): SnapshotDriver {
    return this.#inner;
  }

  /** Passes through to the wrapped driver. */
  version: SnapshotDriver["version"] = () => this.#inner.version();
  /** Passes through to the wrapped driver. */
  attach: SnapshotDriver["attach"] = (path, options) => this.#inner.attach(path, options);
  /** Passes through to the wrapped driver. */
  detach: SnapshotDriver["detach"] = (deviceId) => this.#inner.detach(deviceId);
  /** Passes through to the wrapped driver. */
  listDevices: SnapshotDriver["listDevices"] = () => this.#inner.listDevices();
  /** Passes through to the wrapped driver. */
  getDevice: SnapshotDriver["getDevice"] = (deviceId) => this.#inner.getDevice(deviceId);
  /** Passes through to the wrapped driver. */
  cbtInfo: SnapshotDriver["cbtInfo"] = (deviceId) => this.#inner.cbtInfo(deviceId);
  /** Passes through to the wrapped driver. */
  readCbtMap: SnapshotDriver["readCbtMap"] = (deviceId, range) =>
    this.#inner.readCbtMap(deviceId, range);
  /** Passes through to the wrapped driver. */
  markDirty: SnapshotDriver["markDirty"] = (deviceId, ranges) =>
    this.#inner.markDirty(deviceId, ranges);
  /** Passes through to the wrapped driver. */
  createSnapshot: SnapshotDriver["createSnapshot"] = (options) =>
    this.#inner.createSnapshot(options);
  /** Passes through to the wrapped driver. */
  addDevice: SnapshotDriver["addDevice"] = (snapshotId, deviceId) =>
    this.#inner.addDevice(snapshotId, deviceId);
  /** Passes through to the wrapped driver. */
  waitEvents: SnapshotDriver["waitEvents"] = (snapshotId, options) =>
    this.#inner.waitEvents(snapshotId, options);
  /** Passes through to the wrapped driver. */
  imageSize: SnapshotDriver["imageSize"] = (snapshotId, deviceId) =>
    this.#inner.imageSize(snapshotId, deviceId);
  /** Passes through to the wrapped driver. */
  readImage: SnapshotDriver["readImage"] = (snapshotId, deviceId, offset, into) =>
    this.#inner.readImage(snapshotId, deviceId, offset, into);

  /** Counters of the wrapped driver. */
  async stats(): ReturnType<NonNullable<SnapshotDriver["stats"]>> {
    return (await this.#inner.stats?.()) ?? {};
  }

  /** The snapshot, with its consistency report once taken. */
  async snapshotInfo(snapshotId: string): Promise<SnapshotInfo> {
    return this.#withReport(await this.#inner.snapshotInfo(snapshotId));
  }

  /** Every snapshot, with their reports. */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    return (await this.#inner.listSnapshots()).map((info) => this.#withReport(info));
  }

  /** Destroys the snapshot and forgets its report. */
  async destroySnapshot(snapshotId: string): Promise<void> {
    await this.#inner.destroySnapshot(snapshotId);
    this.#reports.delete(snapshotId);
  }

  /** Closes the wrapped driver and the freezer's threads. */
  async close(): Promise<void> {
    try {
      await this.#inner.close();
    } finally {
      this.#options.freezer.close();
    }
  }

  #withReport(info: SnapshotInfo): SnapshotInfo {
    const report = this.#reports.get(info.id);
    return report ? { ...info, consistency: report } : info;
  }

  /** Hooks, freeze, take, thaw, hooks (see the module's design note). */
  async takeSnapshot(snapshotId: string, options: TakeOptions = {}): Promise<SnapshotInfo> {
    const freeze = options.freeze ?? true;
    const before = await this.#inner.snapshotInfo(snapshotId);
    const deviceIds = before.devices.map((d) => d.deviceId);
    const hooks: HookRun[] = [];
    const context = { snapshotId, deviceIds };
    if (this.#options.hooks) {
      try {
        hooks.push(...await this.#options.hooks.run("pre", context));
      } catch (error) {
        if (error instanceof HookFailedError) {
          await this.#postHooks({ ...context, result: "aborted" });
        }
        throw error;
      }
    }
    let targets: FreezeTarget[] = [];
    const failures = new Map<string, string>();
    let thawedEarly = false;
    let taken: SnapshotInfo | undefined;
    try {
      targets = freeze ? await this.#targets(deviceIds, failures) : [];
      await this.#freezeAll(targets);
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      const maxFreezeMs = this.#options.maxFreezeMs ?? DEFAULT_MAX_FREEZE_MS;
      if (targets.some((t) => t.state.frozen)) {
        watchdog = setTimeout(() => {
          thawedEarly = true;
          this.#log(`take ${snapshotId}: still taking after ${maxFreezeMs} ms; thawing now`);
          void this.#thawAll(targets);
        }, maxFreezeMs);
      }
      try {
        taken = await this.#inner.takeSnapshot(snapshotId, options);
      } finally {
        clearTimeout(watchdog);
        await this.#thawAll(targets);
      }
    } finally {
      const result = taken ? "taken" : "failed";
      hooks.push(...await this.#postHooks({ ...context, result }));
    }
    this.#reports.set(snapshotId, {
      freeze,
      devices: deviceIds.map((deviceId) => ({
        deviceId,
        filesystems: targets.filter((t) => t.deviceId === deviceId).map((t) => t.state),
        ...(failures.has(deviceId) ? { error: failures.get(deviceId) } : {}),
      })),
      hooks,
      thawedEarly,
    });
    return this.#withReport(taken!);
  }

  async #postHooks(
    context: { snapshotId: string; deviceIds: string[]; result: "taken" | "failed" | "aborted" },
  ): Promise<HookRun[]> {
    if (!this.#options.hooks) return [];
    try {
      return await this.#options.hooks.run("post", context);
    } catch (error) {
      this.#log(`post-take hooks of ${context.snapshotId} failed: ${(error as Error).message}`);
      return [];
    }
  }

  /** The block devices standing on `deviceId`'s blocks, by kernel name. */
  async #blockDevicesOf(deviceId: string, backend: string): Promise<string[]> {
    const device = await this.#inner.getDevice(deviceId);
    const roots: string[] = [];
    if (backend === "userspace") {
      const identity = exportIdentity(device.locator);
      if (identity) roots.push(...nbdDevicesFor({ sys: this.#sys, proc: this.#proc }, identity));
    } else {
      const deviceNumber = (this.#options.deviceNumber ?? realLibc().blockDeviceNumber)(
        device.path,
      );
      if (deviceNumber) {
        const name = blockName(this.#sys, `${deviceNumber.major}:${deviceNumber.minor}`);
        if (name) roots.push(name);
      }
    }
    return roots.flatMap((root) => devicesOn(this.#sys, root).map((node) => node.name));
  }

  /**
   * The file systems to freeze, per device; a device whose file systems
   * cannot be looked for gets an error in `failures` and is taken unfrozen.
   */
  async #targets(deviceIds: string[], failures: Map<string, string>): Promise<FreezeTarget[]> {
    const targets: FreezeTarget[] = [];
    let backend: string;
    let mounts: MountEntry[];
    try {
      backend = (await this.#inner.version()).backend;
      mounts = await (this.#options.mounts ?? (() => readMountinfo()))();
    } catch (error) {
      const why = `cannot read the mount table: ${(error as Error).message}`;
      for (const deviceId of deviceIds) failures.set(deviceId, why);
      this.#log(`take: ${why}; nothing is frozen`);
      return targets;
    }
    const seen = new Set<string>();
    for (const deviceId of deviceIds) {
      let names: string[];
      try {
        names = await this.#blockDevicesOf(deviceId, backend);
      } catch (error) {
        const why = `cannot find the block devices on ${deviceId}: ${(error as Error).message}`;
        failures.set(deviceId, why);
        this.#log(`take: ${why}; it is not frozen`);
        continue;
      }
      for (const name of names) {
        const deviceNumber = this.#sys.read(`class/block/${name}/dev`);
        const mount = mounts.find((m) => m.deviceNumber === deviceNumber);
        if (!deviceNumber || !mount || seen.has(deviceNumber)) continue;
        seen.add(deviceNumber);
        targets.push({
          deviceId,
          mount,
          blockDevice: name,
          state: {
            mountPoint: mount.mountPoint,
            fsType: mount.fsType,
            blockDevice: name,
            frozen: false,
          },
        });
      }
    }
    return targets;
  }

  async #freezeAll(targets: FreezeTarget[]): Promise<void> {
    for (const target of targets) {
      try {
        await this.#options.freezer.freeze(target.mount.mountPoint);
        target.frozenAt = performance.now();
        target.state.frozen = true;
        this.#log(
          `froze ${target.mount.mountPoint} (${target.mount.fsType} on ${target.blockDevice})`,
        );
      } catch (error) {
        target.state.error = isServiceError(error, "CONFLICT")
          ? `${(error as Error).message}: frozen by someone else, left as it is`
          : (error as Error).message;
        this.#log(`did not freeze ${target.mount.mountPoint}: ${target.state.error}`);
      }
    }
  }

  async #thawAll(targets: FreezeTarget[]): Promise<void> {
    for (const target of [...targets].reverse()) {
      if (target.frozenAt === undefined) continue;
      const frozenAt = target.frozenAt;
      target.frozenAt = undefined;
      try {
        await this.#options.freezer.thaw(target.mount.mountPoint);
      } catch (error) {
        target.state.error = (error as Error).message;
        this.#log(`could not thaw ${target.mount.mountPoint}: ${target.state.error}`);
      }
      target.state.frozenMs = Math.round(performance.now() - frozenAt);
      this.#log(`thawed ${target.mount.mountPoint} after ${target.state.frozenMs} ms`);
    }
  }
}

/** The export a userspace device's locator names (`nbd://` or `nbd+unix://`), if it is one. */
function exportIdentity(locator: string): ExportIdentity | undefined {
  let url: URL;
  try {
    url = new URL(locator);
  } catch {
    return undefined;
  }
  const name = decodeURIComponent(url.pathname.slice(1));
  if (url.protocol === "nbd:") return { name, port: Number(url.port || 10809), uris: [locator] };
  if (url.protocol === "nbd+unix:") {
    const socketPath = url.searchParams.get("socket") ?? undefined;
    return { name, socketPath, uris: [locator] };
  }
  return undefined;
}
