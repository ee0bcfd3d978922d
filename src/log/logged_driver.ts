/**
 * One log line per state change of the backend, whoever asked for it:
 * attach, detach, create, add, take, destroy (when the call succeeded), and
 * the snapshot events `no_space` and `corrupted` whether or not a client
 * waits for them: every `watchIntervalMs` a watch lists the snapshots and
 * reads each one's event log after the last id it logged (reading takes
 * nothing from the log), and a snapshot whose state turns corrupted is
 * logged once even when its backend raised no event. At start,
 * {@link logAdoption} writes a line for every device and snapshot the
 * backend brought back from an earlier run.
 *
 * @module
 */

import type {
  AttachOptions,
  CreateSnapshotOptions,
  DeviceInfo,
  LoggedEvent,
  SnapshotDriver,
  SnapshotInfo,
} from "../driver.ts";
import type { Logger } from "./logger.ts";

/** Options of {@link withStateLog}. */
export interface StateLogOptions {
  /** How often the corruption watch lists snapshots, in ms (default 1000; 0 for none). */
  watchIntervalMs?: number;
}

/** A driver that logs its state changes; close() also stops the watch. */
export type LoggedDriver = SnapshotDriver;

function corruptedDevices(snapshot: SnapshotInfo): string {
  return snapshot.devices.filter((d) => d.errorCode !== 0)
    .map((d) => `${d.deviceId}:${d.errorName ?? d.errorCode}`).join(",");
}

/** `driver` with a log line for every state change (see the module doc). */
export function withStateLog(
  driver: SnapshotDriver,
  logger: Logger,
  options: StateLogOptions = {},
): LoggedDriver {
  /** Per snapshot, the id of the last event logged (snapshots this wrapper created start at 0). */
  const lastEventId = new Map<string, number>();
  const corruptedLogged = new Set<string>();
  const logCorrupted = (
    snapshotId: string,
    fields: Record<string, string | number | undefined>,
  ) => {
    if (corruptedLogged.has(snapshotId)) return;
    corruptedLogged.add(snapshotId);
    logger.error("snapshot corrupted: its images are unusable, the devices keep working", {
      event: "corrupted",
      snapshot: snapshotId,
      ...fields,
    });
  };
  const logEvent = (snapshotId: string, event: LoggedEvent) => {
    if (event.code === "no_space") {
      logger.warn("snapshot difference storage needs space", {
        event: "no_space",
        snapshot: snapshotId,
        eventId: event.id,
        requestedSectors: event.requestedSectors,
      });
    } else {
      logCorrupted(snapshotId, {
        eventId: event.id,
        device: event.deviceId,
        error: event.errorName ?? event.errorCode,
      });
    }
  };
  const observe = (snapshot: SnapshotInfo) => {
    if (snapshot.state === "corrupted") {
      logCorrupted(snapshot.id, {
        devices: corruptedDevices(snapshot),
        usedBytes: snapshot.storage?.usedBytes,
        limitBytes: snapshot.storage?.limitBytes,
      });
    }
    return snapshot;
  };
  /** Logs the events of `snapshot` after the last one logged; adopted ones skip their past. */
  const readEvents = async (snapshot: SnapshotInfo) => {
    const after = lastEventId.get(snapshot.id);
    const page = await driver.waitEvents(snapshot.id, { after: after ?? 0, timeoutMs: 0 });
    if (after !== undefined) page.events.forEach((event) => logEvent(snapshot.id, event));
    else if (page.events.some((event) => event.code === "corrupted")) {
      corruptedLogged.add(snapshot.id);
    }
    lastEventId.set(snapshot.id, Math.max(page.lastId, after ?? 0));
  };
  const intervalMs = options.watchIntervalMs ?? 1000;
  let watching = false;
  const timer = intervalMs > 0
    ? setInterval(async () => {
      if (watching) return;
      watching = true;
      try {
        for (const snapshot of await driver.listSnapshots()) {
          await readEvents(snapshot).catch(() => {});
          observe(snapshot);
        }
      } catch (error) {
        logger.debug("snapshot watch: listing failed", { error: (error as Error).message });
      } finally {
        watching = false;
      }
    }, intervalMs)
    : undefined;
  if (timer !== undefined) Deno.unrefTimer(timer);

  return {
    version: () => driver.version(),
    async attach(path: string, attachOptions?: AttachOptions): Promise<DeviceInfo> {
      const device = await driver.attach(path, attachOptions);
      logger.info("device attached", {
        event: "attach",
        device: device.id,
        path: device.path,
        capacityBytes: device.capacityBytes,
      });
      return device;
    },
    async detach(deviceId: string): Promise<void> {
      await driver.detach(deviceId);
      logger.info("device detached", { event: "detach", device: deviceId });
    },
    listDevices: () => driver.listDevices(),
    getDevice: (deviceId) => driver.getDevice(deviceId),
    cbtInfo: (deviceId) => driver.cbtInfo(deviceId),
    readCbtMap: (deviceId, range) => driver.readCbtMap(deviceId, range),
    async markDirty(deviceId, ranges) {
      await driver.markDirty(deviceId, ranges);
      logger.info("device ranges marked dirty", {
        event: "mark_dirty",
        device: deviceId,
        ranges: ranges.length,
      });
    },
    async createSnapshot(createOptions: CreateSnapshotOptions): Promise<SnapshotInfo> {
      const snapshot = observe(await driver.createSnapshot(createOptions));
      lastEventId.set(snapshot.id, 0);
      logger.info("snapshot created", {
        event: "create",
        snapshot: snapshot.id,
        devices: snapshot.devices.map((d) => d.deviceId).join(","),
        storage: createOptions.diffStorage.path,
        limitBytes: createOptions.diffStorage.limitBytes,
        writable: snapshot.writable,
      });
      return snapshot;
    },
    async addDevice(snapshotId, deviceId) {
      const snapshot = observe(await driver.addDevice(snapshotId, deviceId));
      logger.info("device added to snapshot", {
        event: "add",
        snapshot: snapshotId,
        device: deviceId,
      });
      return snapshot;
    },
    async takeSnapshot(snapshotId, options) {
      const snapshot = observe(await driver.takeSnapshot(snapshotId, options));
      logger.info("snapshot taken", {
        event: "take",
        snapshot: snapshotId,
        devices: snapshot.devices.map((d) => d.deviceId).join(","),
      });
      return snapshot;
    },
    async listSnapshots() {
      return (await driver.listSnapshots()).map(observe);
    },
    async snapshotInfo(snapshotId) {
      return observe(await driver.snapshotInfo(snapshotId));
    },
    async destroySnapshot(snapshotId) {
      await driver.destroySnapshot(snapshotId);
      lastEventId.delete(snapshotId);
      corruptedLogged.delete(snapshotId);
      logger.info("snapshot destroyed", { event: "destroy", snapshot: snapshotId });
    },
    waitEvents: (snapshotId, waitOptions) => driver.waitEvents(snapshotId, waitOptions),
    imageSize: (snapshotId, deviceId) => driver.imageSize(snapshotId, deviceId),
    readImage: (snapshotId, deviceId, offset, into) =>
      driver.readImage(snapshotId, deviceId, offset, into),
    ...(driver.stats ? { stats: () => driver.stats!() } : {}),
    async close() {
      if (timer !== undefined) clearInterval(timer);
      await driver.close();
    },
  };
}

/**
 * Logs, once at start, every device and snapshot `driver` holds: what it
 * re-attached or re-adopted from an earlier run (nothing on a first start).
 */
export async function logAdoption(driver: SnapshotDriver, logger: Logger): Promise<void> {
  const [devices, snapshots] = await Promise.all([driver.listDevices(), driver.listSnapshots()]);
  for (const device of devices) {
    logger.info("device adopted from an earlier run", {
      event: "adopt",
      device: device.id,
      path: device.path,
      snapshot: device.snapshotId,
    });
  }
  for (const snapshot of snapshots) {
    logger.info("snapshot adopted from an earlier run", {
      event: "adopt",
      snapshot: snapshot.id,
      state: snapshot.state,
    });
  }
}
