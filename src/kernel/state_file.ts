/**
 * What the kernel driver remembers across service restarts. The module keeps
 * its trackers (and snapshots) when the service stops, so a restarted service
 * reads this file, checks each entry against the module (CBTINFO for devices,
 * COLLECT for snapshots) and keeps what the module still has.
 *
 * The file is JSON, written to a temporary name and renamed over the old one,
 * so a crash leaves either the old or the new state.
 *
 * @module
 */

import type { KernelProfile } from "../driver.ts";
import { ServiceError } from "../errors.ts";

/** A remembered device. */
export interface PersistedDevice {
  /** Device id (name). */
  id: string;
  /** Path it was attached from. */
  path: string;
  /** Capacity in bytes at attach. */
  capacityBytes: number;
}

/** A remembered snapshot. */
export interface PersistedSnapshot {
  /** Snapshot uuid. */
  id: string;
  /** Ids of its devices, in the order they were added. */
  deviceIds: string[];
  /** ISO-8601 time of creation (or of adoption, for snapshots found in the module). */
  createdAt: string;
  /** ISO-8601 time of take. */
  takenAt?: string;
  /** Whether the caller asked for writable images. */
  writable: boolean;
  /** The difference storage given at create; absent for adopted snapshots. */
  storage?: { path: string; limitBytes: number };
  /** True when the driver created the storage file (and removes it at destroy). */
  storageCreated?: boolean;
}

/** The whole file. */
export interface KernelState {
  /** Format version. */
  version: 1;
  /** The profile the state was written under. */
  profile: KernelProfile;
  /** Attached devices. */
  devices: PersistedDevice[];
  /** Known snapshots. */
  snapshots: PersistedSnapshot[];
}

/** The state file's name inside the state directory. */
export const STATE_FILE_NAME = "kernel-driver.json";

function statePath(dir: string): string {
  return `${dir.replace(/\/+$/, "")}/${STATE_FILE_NAME}`;
}

function isState(value: unknown): value is KernelState {
  if (typeof value !== "object" || value === null) return false;
  const state = value as Partial<KernelState>;
  return state.version === 1 && Array.isArray(state.devices) && Array.isArray(state.snapshots) &&
    state.devices.every((d) =>
      typeof d?.id === "string" && typeof d.path === "string" &&
      typeof d.capacityBytes === "number"
    ) &&
    state.snapshots.every((s) =>
      typeof s?.id === "string" && Array.isArray(s.deviceIds) &&
      typeof s.createdAt === "string"
    );
}

/**
 * Reads the state of directory `dir`; undefined when there is none yet.
 * INTERNAL when the file exists but is not a state file (it is left as it is).
 */
export async function loadState(dir: string): Promise<KernelState | undefined> {
  const path = statePath(dir);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new ServiceError("INTERNAL", `Cannot read the kernel driver's state ${path}`, {
      cause: error,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ServiceError(
      "INTERNAL",
      `Cannot use the kernel driver's state ${path}: it is not valid JSON (fix or remove it)`,
      { cause: error },
    );
  }
  if (!isState(parsed)) {
    throw new ServiceError(
      "INTERNAL",
      `Cannot use the kernel driver's state ${path}: unknown format (fix or remove it)`,
    );
  }
  return parsed;
}

/** Writes `state` into directory `dir` (created if missing), atomically. */
export async function saveState(dir: string, state: KernelState): Promise<void> {
  const path = statePath(dir);
  const temporary = `${path}.${Deno.pid}.tmp`;
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(temporary, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
    await Deno.rename(temporary, path);
  } catch (error) {
    throw new ServiceError("IO", `Cannot save the kernel driver's state to ${path}`, {
      cause: error,
    });
  }
}
