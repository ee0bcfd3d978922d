/**
 * The userspace backend's snapshots across a service restart, in the state
 * folder (`userspace-snapshots.json`).
 *
 * - While the service runs, the file lists the storage files the service
 *   created (path, device and inode), written before createSnapshot answers,
 *   and says `clean: false`. After a crash (kill -9, power loss) the next
 *   start finds it so: the snapshots are lost (their copy-on-write state was
 *   in memory) and those storage files are removed.
 * - A clean stop stores every queued chunk, syncs each storage and writes
 *   each snapshot: id, times, writability, storage (path, identity, limit,
 *   sectors in use) and per device its take-time capacity, chunk size,
 *   error and STORED chunks (index and storage offset); `clean: true`. The
 *   next start restores them and writes `clean: false` again.
 *
 * The file is replaced atomically (temporary file, fsync, rename); a failed
 * save leaves no temporary file.
 *
 * @module
 */

import { replaceFileAtomically } from "../store/atomic_file.ts";
import { join } from "node:path";
import type { CbtAtTake } from "../engine/snapshot.ts";
import { removeCreated } from "../store/open_verified.ts";

/** The file's name in the state folder. */
export const SNAPSHOT_STATE_FILE_NAME = "userspace-snapshots.json";

/** A storage file the service created (and so removes). */
export interface CreatedStorage {
  /** The snapshot it was created for. */
  snapshotId: string;
  /** Its path. */
  path: string;
  /** st_dev of the file. */
  device: number;
  /** Its inode. */
  inode: number;
}

/** One device of a saved snapshot. */
export interface SavedSnapshotDevice {
  /** Device id. */
  name: string;
  /** Capacity at take (the image's size). */
  capacityBytes: number;
  /** Power of 2 of the chunk size at take. */
  chunkShift: number;
  /** 0, or the errno that corrupted the image. */
  errorCode: number;
  /** STORED chunks: flat pairs of chunk index and storage byte offset. */
  storedChunks: number[];
  /** CBT positions at take (the image's change tokens). */
  cbtAtTake?: CbtAtTake;
}

/** A snapshot saved at a clean stop. */
export interface SavedSnapshot {
  /** Snapshot id. */
  id: string;
  /** Creation time, ms since the epoch. */
  createdAtMs: number;
  /** Take time, ms since the epoch; absent when not taken. */
  takenAtMs?: number;
  /** Whether images accept writes. */
  writable: boolean;
  /** The difference storage. */
  storage: {
    path: string;
    kind: "file" | "block";
    device: number;
    inode: number;
    limitSectors: number;
    filledSectors: number;
  };
  /** Member devices, in order. */
  devices: SavedSnapshotDevice[];
}

/** The whole file. */
export interface SnapshotState {
  /** True only when written by a clean stop. */
  clean: boolean;
  /** Snapshots saved by a clean stop. */
  snapshots: SavedSnapshot[];
  /** Storage files the service created, for snapshots alive or saved. */
  createdStorage: CreatedStorage[];
}

/** Reads and writes the snapshot state of a state folder. */
export class SnapshotStateFile {
  readonly #path: string;
  #writing: Promise<void> = Promise.resolve();

  /** The file of `stateDir`. */
  constructor(stateDir: string) {
    this.#path = join(stateDir, SNAPSHOT_STATE_FILE_NAME);
  }

  /** The file's path. */
  get path(): string {
    return this.#path;
  }

  /** The saved state; undefined when there is none; `problem` when it cannot be read. */
  async load(): Promise<{ state?: SnapshotState; problem?: string }> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.#path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return {};
      return { problem: `cannot read ${this.#path}: ${(error as Error).message}` };
    }
    try {
      const parsed = JSON.parse(text) as Partial<SnapshotState> & { version?: number };
      if (
        parsed.version !== 1 || !Array.isArray(parsed.snapshots) ||
        !Array.isArray(parsed.createdStorage)
      ) {
        return { problem: `${this.#path} is not a snapshot state file` };
      }
      return {
        state: {
          clean: parsed.clean === true,
          snapshots: parsed.snapshots,
          createdStorage: parsed.createdStorage,
        },
      };
    } catch (error) {
      return { problem: `${this.#path} is not valid JSON: ${(error as Error).message}` };
    }
  }

  /** Replaces the file with `state` (writes are serialized). IO when it cannot be written. */
  save(state: SnapshotState): Promise<void> {
    const text = new TextEncoder().encode(JSON.stringify({ version: 1, ...state }) + "\n");
    const write = () => replaceFileAtomically(this.#path, text, { what: "the snapshot state" });
    const saved = this.#writing.then(write, write);
    this.#writing = saved.catch(() => {});
    return saved;
  }
}

/**
 * Removes a storage file the service created, when `path` still names the
 * same file (device and inode, checked through its opened folder:
 * open_verified.ts); anything else there is left alone. Resolves to true
 * when the file is gone.
 */
export async function removeCreatedStorage(storage: CreatedStorage): Promise<boolean> {
  await removeCreated(storage.path, storage);
  try {
    const info = await Deno.lstat(storage.path);
    return !(info.dev === storage.device && info.ino === storage.inode);
  } catch {
    return true;
  }
}
