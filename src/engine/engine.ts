/**
 * The engine: the registry of attached devices (trackers) and snapshots.
 * It is the userspace counterpart of the blksnap module: attach/detach
 * stand for the block-filter attach/detach, createSnapshot/take/destroy for
 * the control device's snapshot ioctls.
 *
 * Ownership: device stores passed to {@link Engine.attach} stay the caller's
 * (the engine never closes them); the storage store passed to
 * {@link Engine.createSnapshot} belongs to the snapshot from the call on (it
 * is closed at destroy, or at once when creation fails).
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { BlockStore, StoreIdentity } from "./block_store.ts";
import { type EngineParams, resolveEngineParams } from "./params.ts";
import { Snapshot } from "./snapshot.ts";
import { createEngineStats, type EngineStats } from "./stats.ts";
import { Tracker } from "./tracker.ts";

/** Options of the {@link Engine} constructor. */
export interface EngineOptions {
  /** Parameter overrides (validated; INVALID_ARGUMENT). */
  params?: Partial<EngineParams>;
  /** Clock in ms since the epoch (default Date.now). */
  now?: () => number;
}

/** Options of {@link Engine.createSnapshot}. */
export interface EngineCreateSnapshotOptions {
  /** The difference storage store; owned by the snapshot from the call on. */
  storage: BlockStore;
  /** The path the storage came from, for reports. */
  storagePath?: string;
  /** The most the storage may grow to, in 512-byte sectors. */
  limitSectors: number;
  /** Whether images accept writes (default false). */
  writable?: boolean;
  /** Names of attached devices to include now. */
  trackers?: string[];
  /** A restored snapshot's id, creation time and storage sectors in use (see SnapshotCreateOptions). */
  restored?: { id: string; createdAtMs: number; filledSectors: number };
}

function sameStore(a: StoreIdentity, b: StoreIdentity): boolean {
  return a.kind === b.kind && a.device === b.device && a.inode === b.inode;
}

/** Attached devices and snapshots, with the blksnap semantics. */
export class Engine {
  /** The resolved parameters. */
  readonly params: EngineParams;
  /** Counters for metrics. */
  readonly stats: EngineStats = createEngineStats();
  #now: () => number;
  #trackers = new Map<string, Tracker>();
  #snapshots = new Map<string, Snapshot>();
  #closed = false;

  /** An engine with `options.params` over the kernel defaults. INVALID_ARGUMENT for bad params. */
  constructor(options: EngineOptions = {}) {
    this.params = resolveEngineParams(options.params);
    this.#now = options.now ?? Date.now;
  }

  #refuseClosed(action: string): void {
    if (this.#closed) {
      throw new ServiceError("UNAVAILABLE", `Cannot ${action}: the engine is closed`);
    }
  }

  /**
   * Starts tracking `store` under `name`. CONFLICT when the name is taken or
   * the same store is attached already; INVALID_ARGUMENT for an empty name;
   * IO when its capacity cannot be read.
   */
  async attach(name: string, store: BlockStore): Promise<Tracker> {
    this.#refuseClosed(`attach ${name}`);
    if (typeof name !== "string" || name.length === 0) {
      throw new ServiceError("INVALID_ARGUMENT", "Cannot attach a device without a name", {
        field: "name",
      });
    }
    const refuseTaken = () => {
      if (this.#trackers.has(name)) {
        throw new ServiceError("CONFLICT", `Cannot attach ${name}: the name is taken`);
      }
      for (const tracker of this.#trackers.values()) {
        if (sameStore(tracker.store.identity, store.identity)) {
          throw new ServiceError(
            "CONFLICT",
            `Cannot attach ${store.name} as ${name}: it is attached as ${tracker.name}`,
          );
        }
      }
    };
    refuseTaken();
    try {
      await store.refreshCapacity();
    } catch (error) {
      throw new ServiceError("IO", `Cannot attach ${name}: its capacity cannot be read`, {
        cause: error,
      });
    }
    refuseTaken();
    this.#refuseClosed(`attach ${name}`);
    const tracker = new Tracker(name, store, { params: this.params, stats: this.stats });
    this.#trackers.set(name, tracker);
    return tracker;
  }

  /**
   * Stops tracking `name` (its CBT map is dropped) after writes in flight
   * finish. NOT_FOUND when unknown; CONFLICT while it is in a snapshot.
   */
  async detach(name: string): Promise<void> {
    const tracker = this.tracker(name);
    if (tracker.snapshot) {
      throw new ServiceError(
        "CONFLICT",
        `Cannot detach ${name}: it is in snapshot ${tracker.snapshot.id}`,
      );
    }
    this.#trackers.delete(name);
    await tracker.freeze();
    tracker.unfreeze();
  }

  /** The tracker of `name`. NOT_FOUND when unknown. */
  tracker(name: string): Tracker {
    const tracker = this.#trackers.get(name);
    if (!tracker) throw new ServiceError("NOT_FOUND", `Device ${name} is not attached`);
    return tracker;
  }

  /** All attached devices. */
  trackers(): Tracker[] {
    return [...this.#trackers.values()];
  }

  /**
   * Creates a snapshot with its difference storage. NOT_FOUND for an unknown
   * device; CONFLICT when one is in a snapshot; INVALID_ARGUMENT when the
   * storage lives on one or the limit is invalid; STORAGE_EXHAUSTED when the
   * storage cannot be set up. The storage store is closed when this rejects.
   */
  async createSnapshot(options: EngineCreateSnapshotOptions): Promise<Snapshot> {
    let trackers: Tracker[];
    try {
      this.#refuseClosed("create a snapshot");
      trackers = (options.trackers ?? []).map((name) => this.tracker(name));
    } catch (error) {
      await options.storage.close().catch(() => {});
      throw error;
    }
    const snapshot = await Snapshot.create({
      storage: options.storage,
      storagePath: options.storagePath,
      limitSectors: options.limitSectors,
      writable: options.writable,
      trackers,
      params: this.params,
      stats: this.stats,
      now: this.#now,
      isAttached: (tracker) => this.#trackers.get(tracker.name) === tracker,
      onDestroyed: (destroyed) => this.#snapshots.delete(destroyed.id),
      ...options.restored,
    });
    this.#snapshots.set(snapshot.id, snapshot);
    return snapshot;
  }

  /** The snapshot `id`. NOT_FOUND when unknown or destroyed. */
  snapshot(id: string): Snapshot {
    const snapshot = this.#snapshots.get(id);
    if (!snapshot) throw new ServiceError("NOT_FOUND", `Snapshot ${id} does not exist`);
    return snapshot;
  }

  /** All snapshots not yet destroyed. */
  snapshots(): Snapshot[] {
    return [...this.#snapshots.values()];
  }

  /**
   * Destroys every snapshot and forgets every device. Device stores are not
   * closed (the caller owns them). Idempotent.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const failures: unknown[] = [];
    for (const snapshot of [...this.#snapshots.values()]) {
      await snapshot.destroy().catch((error) => failures.push(error));
    }
    this.#snapshots.clear();
    this.#trackers.clear();
    if (failures.length > 0) {
      throw new ServiceError(
        "IO",
        `Engine closed, but ${failures.length} snapshot(s) failed to close`,
        {
          cause: failures[0],
        },
      );
    }
  }
}
