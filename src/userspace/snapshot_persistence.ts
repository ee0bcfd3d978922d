/**
 * Saving the userspace backend's snapshots at a clean stop and restoring
 * them at start (the file format and the crash rule are in
 * snapshot_state_file.ts).
 *
 * Save (writes to the devices stopped): for each snapshot, every queued
 * chunk is stored (DiffArea.storeQueued), the storage is synced, and its
 * chunk table and counters are collected. A snapshot whose storage is an
 * unnamed file in a folder cannot outlive the process and is not saved.
 *
 * Restore: a saved snapshot comes back only when every member device is
 * attached again with a CBT record the service vouched for (closed cleanly,
 * same identity and mtime: nothing wrote to it while stopped), and its
 * storage is the same file or device, holding at least the sectors in use.
 * Otherwise it is reported lost in the log, and its storage removed when
 * the service created it.
 *
 * @module
 */

import type { Engine } from "../engine/engine.ts";
import type { Snapshot } from "../engine/snapshot.ts";
import type { NbdLogger } from "../nbd/mod.ts";
import type { FileStore } from "../store/file_store.ts";
import { openStore } from "../store/open_store.ts";
import {
  type CreatedStorage,
  removeCreatedStorage,
  type SavedSnapshot,
  type SnapshotStateFile,
} from "./snapshot_state_file.ts";

const SECTOR_BYTES = 512;

/**
 * Stores every queued chunk of `snapshot`, syncs its storage and returns
 * its saved form; undefined when it cannot be saved (unnamed storage,
 * destroyed) or storing failed.
 */
export async function saveSnapshot(
  snapshot: Snapshot,
  store: FileStore,
): Promise<SavedSnapshot | undefined> {
  const storage = snapshot.storageInfo();
  const path = storage.path;
  const storageIdentity = store.identity;
  if (!path || snapshot.state === "destroyed") return undefined;
  if (storageIdentity.kind !== "file" && storageIdentity.kind !== "block") return undefined;
  const info = await Deno.stat(path).catch(() => undefined);
  if (!info || info.isDirectory) return undefined;
  const trackers = snapshot.trackers();
  const taken = snapshot.takenAtMs !== undefined;
  for (const tracker of trackers) await snapshot.diffArea(tracker.name)?.storeQueued();
  await store.flush();
  return {
    id: snapshot.id,
    createdAtMs: snapshot.createdAtMs,
    ...(taken ? { takenAtMs: snapshot.takenAtMs } : {}),
    writable: snapshot.writable,
    storage: {
      path,
      kind: storageIdentity.kind,
      device: storageIdentity.device,
      inode: storageIdentity.inode,
      limitSectors: storage.limitSectors,
      filledSectors: storage.filledSectors,
    },
    devices: trackers.map((tracker) => {
      const area = snapshot.diffArea(tracker.name);
      return {
        name: tracker.name,
        capacityBytes: area?.capacityBytes ?? tracker.capacityBytes,
        chunkShift: area?.chunkShift ?? 0,
        errorCode: area?.errorCode ?? 0,
        storedChunks: area?.storedChunks() ?? [],
        ...(taken ? { cbtAtTake: snapshot.cbtAtTake(tracker.name) } : {}),
      };
    }),
  };
}

/** Options of {@link restoreSnapshot}. */
export interface RestoreSnapshotOptions {
  /** The engine, with the devices attached again. */
  engine: Engine;
  /** Whether a device's CBT record was vouched for (nothing wrote to it while stopped). */
  vouched: (deviceName: string) => boolean;
  /** Log sink. */
  logger?: NbdLogger;
}

/**
 * Brings `saved` back into the engine; returns the snapshot and its storage
 * store, or a reason why it is lost.
 */
export async function restoreSnapshot(
  saved: SavedSnapshot,
  options: RestoreSnapshotOptions,
): Promise<{ snapshot: Snapshot; storage: FileStore } | { lost: string }> {
  const { engine } = options;
  for (const device of saved.devices) {
    if (!engine.trackers().some((t) => t.name === device.name)) {
      return { lost: `device ${device.name} is not attached` };
    }
    if (!options.vouched(device.name)) {
      return { lost: `the CBT record of ${device.name} could not be vouched for` };
    }
  }
  let storage: FileStore;
  try {
    storage = await openStore(saved.storage.path, {
      purpose: "use as difference storage",
      guardTruncation: true,
    });
  } catch (error) {
    return { lost: `its storage ${saved.storage.path} cannot be opened: ${error}` };
  }
  const { kind, device, inode } = storage.identity;
  if (
    kind !== saved.storage.kind || device !== saved.storage.device ||
    inode !== saved.storage.inode ||
    storage.capacityBytes < saved.storage.filledSectors * SECTOR_BYTES
  ) {
    await storage.close();
    return { lost: `its storage ${saved.storage.path} is no longer the file it was` };
  }
  let snapshot: Snapshot;
  try {
    snapshot = await engine.createSnapshot({
      storage,
      storagePath: saved.storage.path,
      limitSectors: saved.storage.limitSectors,
      writable: saved.writable,
      trackers: saved.devices.map((d) => d.name),
      restored: {
        id: saved.id,
        createdAtMs: saved.createdAtMs,
        filledSectors: saved.storage.filledSectors,
      },
    });
  } catch (error) {
    return { lost: `${(error as Error).message}` };
  }
  if (saved.takenAtMs !== undefined) {
    try {
      await snapshot.restoreTaken(
        saved.devices.map((d) => ({
          tracker: engine.tracker(d.name),
          capacityBytes: d.capacityBytes,
          chunkShift: d.chunkShift,
          storedChunks: d.storedChunks,
          errorCode: d.errorCode,
          cbtAtTake: d.cbtAtTake,
        })),
        saved.takenAtMs,
      );
    } catch (error) {
      await snapshot.destroy().catch(() => {});
      return { lost: `${(error as Error).message}` };
    }
  }
  return { snapshot, storage };
}

/** A snapshot back after a restart, its storage store and its created-storage entry. */
export interface RestoredSnapshot {
  /** The snapshot, in the engine. */
  snapshot: Snapshot;
  /** Its difference storage store. */
  storage: FileStore;
  /** The entry of its storage file when the service created it. */
  created?: CreatedStorage;
}

/**
 * At start: restores the snapshots a clean stop saved in `file` (logging
 * each one lost and why); after an unclean stop logs them all lost. Then
 * removes every storage file the service created for a snapshot that did
 * not come back. Resolves to the snapshots that came back.
 */
export async function restoreSavedSnapshots(
  file: SnapshotStateFile,
  options: RestoreSnapshotOptions,
): Promise<RestoredSnapshot[]> {
  const log = (level: "info" | "warn", message: string) =>
    options.logger?.(level, `userspace: ${message}`);
  const { state, problem } = await file.load();
  if (problem) log("warn", `${problem}; no snapshots are restored`);
  if (!state) return [];
  const created = new Map(state.createdStorage.map((c) => [c.snapshotId, c]));
  const restored: RestoredSnapshot[] = [];
  if (!state.clean) {
    log(
      "warn",
      "the service did not stop cleanly: its snapshots are lost (their copy-on-write state " +
        `was in memory); removing the ${created.size} storage file(s) it created`,
    );
  } else {
    for (const saved of state.snapshots) {
      const outcome = await restoreSnapshot(saved, options);
      if ("lost" in outcome) {
        log("warn", `snapshot ${saved.id} is lost: ${outcome.lost}`);
        continue;
      }
      restored.push({ ...outcome, created: created.get(saved.id) });
      created.delete(saved.id);
      log("info", `restored snapshot ${saved.id} (${outcome.snapshot.state})`);
    }
  }
  for (const storage of created.values()) {
    if (await removeCreatedStorage(storage)) log("info", `removed ${storage.path}`);
  }
  return restored;
}
