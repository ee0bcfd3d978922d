/**
 * A snapshot: a set of tracked devices, one difference storage, an event
 * queue, and after take one image per device.
 *
 * Design note (seed 004 tracker_take_snapshot / tracker_release_snapshot;
 * the kernel's snapshot.c is not among the seeds, its behaviour is given by
 * DESIGN.md and the issue):
 * - create claims the devices (a device belongs to at most one snapshot) and
 *   sets up the difference storage, which must not live on a member device;
 *   the snapshot owns the storage store from then on and closes it at destroy
 *   (or when create fails);
 * - take is atomic across devices: every member is frozen (new writes wait,
 *   writes in flight finish), then for each member the capacity is re-read,
 *   chunk sizing is checked for all before anything changes, a corrupted or
 *   resized CBT map is reset, the map switches and a difference area starts;
 *   then all members are unfrozen. No write reaches any member between the
 *   switch of one member and another;
 * - destroy first stops image I/O (new image I/O fails with UNAVAILABLE) and
 *   lets image I/O in flight finish while copy-on-write still protects it
 *   (the kernel frees the image disk first too), then freezes the members,
 *   detaches the difference areas, unfreezes, stops the store workers, and
 *   closes the storage and the event log. The trackers stay attached with
 *   their CBT maps.
 * Take records each member's CBT position just before and right after the
 * switch: what the snapshot's change token names (change_token.ts).
 * Control operations (add, take, destroy) are serialised by a lock.
 * Across a service restart (not in the seed): create takes the saved id and
 * the storage's used sectors, and {@link Snapshot.restoreTaken} is take
 * without the CBT switch (the restored maps switched already), its areas
 * starting with their saved STORED chunks.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { EventPage, SnapshotEvent, WaitEventsOptions } from "../driver.ts";
import type { CbtMapInfo } from "./cbt_map.ts";
import type { BlockStore, StoreIdentity } from "./block_store.ts";
import { DiffArea } from "./diff_area.ts";
import { DiffStorage } from "./diff_storage.ts";
import { type EventInput, EventLog } from "../event_log.ts";
import { SnapshotImage } from "./image.ts";
import { Mutex } from "./mutex.ts";
import { chunkSizing, type EngineParams, SECTOR_BYTES, type Sizing } from "./params.ts";
import type { EngineStats } from "./stats.ts";
import type { Tracker } from "./tracker.ts";

/** The life of a snapshot. */
export type SnapshotStateName = "created" | "taken" | "corrupted" | "destroyed";

/** Options of {@link Snapshot.create}. */
export interface SnapshotCreateOptions {
  /** The difference storage store; the snapshot owns it from the call on. */
  storage: BlockStore;
  /** The path the storage came from, for reports. */
  storagePath?: string;
  /** The most the storage may grow to, in sectors. */
  limitSectors: number;
  /** Whether images accept writes. */
  writable?: boolean;
  /** Devices to include now. */
  trackers: Tracker[];
  /** Engine parameters. */
  params: EngineParams;
  /** Engine counters. */
  stats: EngineStats;
  /** Clock for event and take times, in ms since the epoch. */
  now: () => number;
  /** Whether a tracker is still attached to the engine. */
  isAttached: (tracker: Tracker) => boolean;
  /** Called once the snapshot is destroyed. */
  onDestroyed: (snapshot: Snapshot) => void;
  /** The id (a restored snapshot's); a new UUID by default. */
  id?: string;
  /** Creation time (a restored snapshot's); now by default. */
  createdAtMs?: number;
  /** Sectors of the storage already in use (a restored snapshot's); default 0. */
  filledSectors?: number;
}

/** One device of a snapshot restored after a service restart ({@link Snapshot.restoreTaken}). */
export interface RestoredDevice {
  /** The member device. */
  tracker: Tracker;
  /** Its capacity at take (the image's size). */
  capacityBytes: number;
  /** Power of 2 of its chunk size at take. */
  chunkShift: number;
  /** Its STORED chunks: flat pairs of chunk index and storage byte offset. */
  storedChunks: ArrayLike<number>;
  /** 0, or the errno that had corrupted its image. */
  errorCode: number;
  /** Its CBT positions at take, as {@link Snapshot.cbtAtTake} gave them (for its change tokens). */
  cbtAtTake?: CbtAtTake;
}

/** Usage of a snapshot's difference storage. */
export interface SnapshotStorageInfo {
  /** The path given at create, if any. */
  path?: string;
  /** What the storage holds now, in bytes. */
  capacityBytes: number;
  /** Bytes handed out to chunks. */
  usedBytes: number;
  /** The limit in bytes. */
  limitBytes: number;
  /** What the storage holds now, in sectors. */
  capacitySectors: number;
  /** Sectors handed out to chunks. */
  filledSectors: number;
  /** Sectors the storage will hold once pending growth completes. */
  requestedSectors: number;
  /** The limit in sectors. */
  limitSectors: number;
  /** True once an allocation failed for lack of space. */
  overflowed: boolean;
}

/**
 * True when a difference storage with identity `storage` lives on the device
 * with identity `member`: a file on a member block device's file system, the
 * same block device, or the same file (or memory store).
 */
export function storageLivesOn(storage: StoreIdentity, member: StoreIdentity): boolean {
  if (member.kind === "block") {
    return (storage.kind === "file" || storage.kind === "block") &&
      storage.device === member.device;
  }
  return storage.kind === member.kind && storage.device === member.device &&
    storage.inode === member.inode;
}

/** A member's CBT position at take: just before (ahead of any reset) and right after the switch. */
export interface CbtAtTake {
  /** CBTINFO just before the take. */
  before: CbtMapInfo;
  /** CBTINFO right after the take: the snapshot's position. */
  after: CbtMapInfo;
}

/** A snapshot of one or more devices. */
export class Snapshot {
  /** UUID of the snapshot. */
  readonly id: string;
  /** Whether images accept writes. */
  readonly writable: boolean;
  /** Creation time, ms since the epoch. */
  readonly createdAtMs: number;
  #options: SnapshotCreateOptions;
  #state: "created" | "taken" | "destroyed" = "created";
  #takenAtMs: number | undefined = undefined;
  #trackers: Tracker[] = [];
  #images = new Map<string, SnapshotImage>();
  #areas = new Map<string, DiffArea>();
  #events = new EventLog();
  #cbtAtTake = new Map<string, CbtAtTake>();
  #control = new Mutex();
  #storage!: DiffStorage;
  #ended = new AbortController();

  private constructor(options: SnapshotCreateOptions) {
    this.#options = options;
    this.id = options.id ?? crypto.randomUUID();
    this.writable = options.writable ?? false;
    this.createdAtMs = options.createdAtMs ?? options.now();
  }

  /**
   * Creates a snapshot holding `options.trackers`, with its difference
   * storage set up. CONFLICT when a device is in a snapshot (or listed twice),
   * INVALID_ARGUMENT when the storage lives on a device, errors of
   * DiffStorage.open for the storage. The storage store is closed when this
   * rejects.
   */
  static async create(options: SnapshotCreateOptions): Promise<Snapshot> {
    const snapshot = new Snapshot(options);
    try {
      for (const tracker of options.trackers) snapshot.add(tracker);
      snapshot.#storage = await DiffStorage.open(options.storage, {
        limitSectors: options.limitSectors,
        path: options.storagePath,
        params: options.params,
        stats: options.stats,
        emit: (event) => snapshot.#raise(event),
        filledSectors: options.filledSectors,
      });
    } catch (error) {
      for (const tracker of snapshot.#trackers) tracker.setSnapshot(undefined);
      snapshot.#state = "destroyed";
      await options.storage.close().catch(() => {});
      throw error;
    }
    return snapshot;
  }

  /** Aborted when destroy begins: the snapshot's images are going away (their NBD exports end). */
  get ended(): AbortSignal {
    return this.#ended.signal;
  }

  /** Current state; "corrupted" when a taken snapshot has a corrupted device. */
  get state(): SnapshotStateName {
    if (this.#state === "taken" && [...this.#areas.values()].some((area) => area.isCorrupted)) {
      return "corrupted";
    }
    return this.#state;
  }

  /** Time of take, ms since the epoch. */
  get takenAtMs(): number | undefined {
    return this.#takenAtMs;
  }

  #raise(event: EventInput): void {
    this.#options.stats.events += 1;
    this.#events.append({ ...event, timeMs: this.#options.now() } as SnapshotEvent);
  }

  #refuseUnless(state: "created" | "taken", action: string): void {
    if (this.#state === state && !this.#control.locked) return;
    throw new ServiceError(
      "CONFLICT",
      `Cannot ${action} snapshot ${this.id}: it is ${this.#control.locked ? "busy" : this.state}`,
    );
  }

  /**
   * Adds a device before take. CONFLICT when the snapshot is taken, busy or
   * destroyed, or the device is in a snapshot; NOT_FOUND when it is no longer
   * attached; INVALID_ARGUMENT when the difference storage lives on it.
   */
  add(tracker: Tracker): void {
    this.#refuseUnless("created", `add ${tracker.name} to`);
    if (!this.#options.isAttached(tracker)) {
      throw new ServiceError(
        "NOT_FOUND",
        `Cannot add ${tracker.name} to snapshot ${this.id}: it is not attached`,
      );
    }
    if (tracker.snapshot) {
      throw new ServiceError(
        "CONFLICT",
        `Cannot add ${tracker.name} to snapshot ${this.id}: it is in snapshot ${tracker.snapshot.id}`,
      );
    }
    if (storageLivesOn(this.#options.storage.identity, tracker.store.identity)) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot add ${tracker.name} to snapshot ${this.id}: the difference storage ` +
          `${this.#options.storage.name} lives on that device`,
      );
    }
    tracker.setSnapshot(this);
    this.#trackers.push(tracker);
  }

  /**
   * Takes the snapshot atomically across its devices. CONFLICT when taken,
   * busy or destroyed; INVALID_ARGUMENT without devices or when a device
   * needs chunks above the maximum size; IO when a capacity cannot be read.
   */
  async take(): Promise<void> {
    this.#refuseUnless("created", "take");
    const trackers = [...this.#trackers];
    if (trackers.length === 0) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot take snapshot ${this.id}: it has no devices`,
      );
    }
    const { params, stats } = this.#options;
    await this.#control.lock();
    try {
      await Promise.all(trackers.map((tracker) => tracker.freeze()));
      try {
        const plans: Array<{ tracker: Tracker; capacityBytes: number; sizing: Sizing }> = [];
        for (const tracker of trackers) {
          const capacityBytes = await this.#refreshCapacity(tracker);
          plans.push({
            tracker,
            capacityBytes,
            sizing: chunkSizing(capacityBytes, tracker.store.minIoBytes, params),
          });
        }
        for (const { tracker, capacityBytes, sizing } of plans) {
          const before = tracker.cbt.info();
          if (tracker.cbt.isCorrupted || tracker.cbt.capacityBytes !== capacityBytes) {
            tracker.cbt.reset(capacityBytes);
          }
          tracker.cbt.switch();
          this.#cbtAtTake.set(tracker.name, { before, after: tracker.cbt.info() });
          const area = new DiffArea({
            name: tracker.name,
            original: tracker.store,
            storage: this.#storage,
            capacityBytes,
            sizing,
            params,
            emit: (event) => this.#raise(event),
            stats,
          });
          tracker.attachDiffArea(area);
          this.#areas.set(tracker.name, area);
          this.#images.set(tracker.name, this.#image(tracker, area));
        }
        this.#state = "taken";
        this.#takenAtMs = this.#options.now();
        stats.snapshotsTaken += 1;
      } finally {
        for (const tracker of trackers) tracker.unfreeze();
      }
    } finally {
      this.#control.unlock();
    }
  }

  /**
   * Makes a created snapshot taken again as it was before a service restart
   * (at `takenAtMs`): each member gets a difference area of its take-time
   * capacity with its saved STORED chunks, and copy-on-write resumes; the
   * CBT maps are left as restored. CONFLICT unless created and idle;
   * INVALID_ARGUMENT when the devices are not exactly the members, a
   * capacity changed or the chunk sizing differs from the saved one.
   */
  async restoreTaken(devices: RestoredDevice[], takenAtMs: number): Promise<void> {
    this.#refuseUnless("created", "restore");
    const what = `Cannot restore snapshot ${this.id}`;
    const members = new Set(this.#trackers);
    if (devices.length !== members.size || devices.some((d) => !members.has(d.tracker))) {
      throw new ServiceError("INVALID_ARGUMENT", `${what}: the devices are not its members`);
    }
    const { params, stats } = this.#options;
    const plans = devices.map((device) => {
      const sizing = chunkSizing(device.capacityBytes, device.tracker.store.minIoBytes, params);
      if (
        sizing.shift !== device.chunkShift ||
        device.tracker.capacityBytes !== device.capacityBytes
      ) {
        throw new ServiceError(
          "INVALID_ARGUMENT",
          `${what}: device ${device.tracker.name} no longer has its take-time size or chunking`,
        );
      }
      return { device, sizing };
    });
    await this.#control.lock();
    try {
      await Promise.all(devices.map(({ tracker }) => tracker.freeze()));
      try {
        for (const { device, sizing } of plans) {
          const { tracker } = device;
          const area = new DiffArea({
            name: tracker.name,
            original: tracker.store,
            storage: this.#storage,
            capacityBytes: device.capacityBytes,
            sizing,
            params,
            emit: (event) => this.#raise(event),
            stats,
            storedChunks: device.storedChunks,
          });
          if (device.errorCode !== 0) area.setCorrupted(device.errorCode);
          if (device.cbtAtTake) this.#cbtAtTake.set(tracker.name, device.cbtAtTake);
          tracker.attachDiffArea(area);
          this.#areas.set(tracker.name, area);
          this.#images.set(tracker.name, this.#image(tracker, area));
        }
        this.#state = "taken";
        this.#takenAtMs = takenAtMs;
      } finally {
        for (const { tracker } of devices) tracker.unfreeze();
      }
    } finally {
      this.#control.unlock();
    }
  }

  #image(tracker: Tracker, area: DiffArea): SnapshotImage {
    return new SnapshotImage(area, {
      cbt: tracker.cbt,
      writable: this.writable,
      marksDurable: () => tracker.marksDurable(),
    });
  }

  async #refreshCapacity(tracker: Tracker): Promise<number> {
    try {
      return await tracker.store.refreshCapacity();
    } catch (error) {
      throw new ServiceError(
        "IO",
        `Cannot take snapshot ${this.id}: the capacity of ${tracker.name} cannot be read`,
        { cause: error },
      );
    }
  }

  /**
   * Destroys the snapshot, also while I/O is in flight: images stop, the
   * storage is closed, the devices stay attached. Idempotent. Rejects with IO
   * only when closing the storage store fails (the snapshot is gone anyway).
   */
  async destroy(): Promise<void> {
    await this.#control.lock();
    try {
      if (this.#state === "destroyed") return;
      const wasTaken = this.#state === "taken";
      this.#state = "destroyed";
      this.#ended.abort();
      const trackers = [...this.#trackers];
      const areas = [...this.#areas.values()];
      await Promise.all(areas.map((area) => area.stopImageIo()));
      if (wasTaken) {
        await Promise.all(trackers.map((tracker) => tracker.freeze()));
        for (const tracker of trackers) tracker.detachDiffArea();
        for (const tracker of trackers) tracker.unfreeze();
      }
      await Promise.all(areas.map((area) => area.close()));
      this.#images.clear();
      for (const tracker of trackers) tracker.setSnapshot(undefined);
      this.#events.close();
      let failure: unknown;
      try {
        await this.#storage.close();
      } catch (error) {
        failure = error;
      }
      this.#options.onDestroyed(this);
      if (failure !== undefined) {
        throw new ServiceError(
          "IO",
          `Snapshot ${this.id} was destroyed, but closing its difference storage failed`,
          { cause: failure },
        );
      }
    } finally {
      this.#control.unlock();
    }
  }

  /**
   * The events of the log after `options.after`, waiting up to `timeoutMs`
   * for one (see EventLog.wait); waits pending at destroy answer with none.
   * NOT_FOUND once destroyed.
   */
  waitEvents(options: WaitEventsOptions): Promise<EventPage> {
    if (this.#state === "destroyed") {
      return Promise.reject(
        new ServiceError("NOT_FOUND", `Cannot wait for events of snapshot ${this.id}: destroyed`),
      );
    }
    return this.#events.wait(options);
  }

  /** A member's CBT position at take; undefined before take or for a non-member. */
  cbtAtTake(trackerName: string): CbtAtTake | undefined {
    return this.#cbtAtTake.get(trackerName);
  }

  /** The image of device `trackerName`. NOT_FOUND before take, after destroy, or for a non-member. */
  image(trackerName: string): SnapshotImage {
    const image = this.#images.get(trackerName);
    if (!image) {
      throw new ServiceError(
        "NOT_FOUND",
        `No image of ${trackerName} in snapshot ${this.id} (it is ${this.state})`,
      );
    }
    return image;
  }

  /** The member devices. */
  trackers(): Tracker[] {
    return [...this.#trackers];
  }

  /** The difference area of a member after take (diagnostics and tests). */
  diffArea(trackerName: string): DiffArea | undefined {
    return this.#areas.get(trackerName);
  }

  /** Usage of the difference storage. */
  storageInfo(): SnapshotStorageInfo {
    const counters = this.#storage.counters();
    return {
      path: this.#storage.path,
      capacityBytes: counters.capacitySectors * SECTOR_BYTES,
      usedBytes: counters.filledSectors * SECTOR_BYTES,
      limitBytes: counters.limitSectors * SECTOR_BYTES,
      ...counters,
    };
  }

  /** 0, or the errno (28 ENOSPC, 5 EIO) that corrupted that device's image. NOT_FOUND for a non-member. */
  deviceError(trackerName: string): number {
    if (!this.#trackers.some((tracker) => tracker.name === trackerName)) {
      throw new ServiceError(
        "NOT_FOUND",
        `Device ${trackerName} is not in snapshot ${this.id}`,
      );
    }
    return this.#areas.get(trackerName)?.errorCode ?? 0;
  }
}
