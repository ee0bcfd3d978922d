/**
 * The one seam between the HTTP API and the two backends. The kernel backend
 * drives the blksnap module through ioctls; the userspace backend runs the
 * engine and serves devices and images over NBD. Both implement
 * {@link SnapshotDriver} and pass the same conformance suite; every failure
 * they raise is a {@link ServiceError} from `errors.ts`.
 *
 * Units: bytes unless a name says `Sectors` (512-byte sectors, as in the
 * kernel's interface).
 *
 * @module
 */

/** Device ids: names usable as NBD export names, in URLs and in change tokens (both backends). */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

/** Which implementation sits behind the seam. */
export type BackendKind = "kernel" | "userspace";

/** How the kernel module is reached (see ABI.md): upstream or out-of-tree build. */
export type KernelProfile = "upstream" | "outoftree";

/** What a backend can do, for clients to adapt to. */
export type Capability =
  | "cbt"
  | "cbt-dirty"
  | "writable-images"
  | "image-read"
  | "nbd-exports"
  | "events"
  | "multi-device-snapshots";

/** Version and capabilities of the backend. */
export interface DriverVersion {
  /** Which backend this is. */
  backend: BackendKind;
  /** Kernel profile, for the kernel backend. */
  profile?: KernelProfile;
  /** The module's VERSION as "major.minor.revision.build", for the kernel backend. */
  moduleVersion?: string;
  /** What the backend supports. */
  capabilities: Capability[];
}

/** A tracked (attached) device. */
export interface DeviceInfo {
  /** Stable id: the device's name, unique among attached devices. */
  id: string;
  /** The path it was attached from (a block device or, for userspace, a regular file). */
  path: string;
  /** Capacity in bytes. */
  capacityBytes: number;
  /** The snapshot it belongs to, if any. */
  snapshotId?: string;
  /**
   * Where to do I/O to the tracked device so that writes are tracked: the
   * NBD URI for the userspace backend, the device path for the kernel backend.
   */
  locator: string;
  /**
   * "attached" (tracked), or a remembered device that is not tracked now:
   * "missing" (it could not be opened at start; retried) or "refused" (its
   * path is outside the allowed prefixes). Absent means attached.
   */
  state?: "attached" | "missing" | "refused";
  /** Why a missing or refused device is not tracked. */
  error?: string;
}

/** Options of {@link SnapshotDriver.attach}. */
export interface AttachOptions {
  /** The device's id; derived from the path's base name when omitted. */
  name?: string;
  /**
   * Checks the real path of the object the driver opened (read from its
   * descriptor, not from the name); throws (FORBIDDEN) to refuse it.
   */
  verifyOpened?: (realPath: string) => void;
}

/** CBT state of a device, as CBTINFO reports it. */
export interface CbtInfo {
  /** Device capacity in bytes. */
  capacityBytes: number;
  /** Tracking block size in bytes. */
  blockSizeBytes: number;
  /** Number of tracking blocks (one byte each in the map). */
  blockCount: number;
  /** UUID of the CBT generation; change numbers compare only within one generation. */
  generationId: string;
  /** The change number of the previous snapshot (what the read map's newest entries carry). */
  changesNumber: number;
}

/** A range of 512-byte sectors. */
export interface SectorRange {
  /** First sector. */
  offsetSectors: number;
  /** Number of sectors (at least 1). */
  countSectors: number;
}

/** Where a snapshot keeps the original data of changed chunks. */
export interface DiffStorageOptions {
  /** A regular file (created if missing), a block device, or a directory (an unnamed file is made in it). */
  path: string;
  /** The most the storage may grow to, in bytes. */
  limitBytes: number;
  /**
   * Use an existing non-empty regular file (its contents are lost). Without
   * it such a file is refused (CONFLICT): it may hold data of a crashed run
   * or of someone else.
   */
  overwrite?: boolean;
}

/** Options of {@link SnapshotDriver.createSnapshot}. */
export interface CreateSnapshotOptions {
  /** Ids of attached devices to include (may be empty, then add devices later). */
  deviceIds: string[];
  /** The difference storage. */
  diffStorage: DiffStorageOptions;
  /** Whether images accept writes (userspace backend; kernel images are block devices). */
  writable?: boolean;
  /** Checks the real path of the storage the driver opened, as {@link AttachOptions.verifyOpened}. */
  verifyOpened?: (realPath: string) => void;
}

/** The life of a snapshot. */
export type SnapshotState = "created" | "taken" | "corrupted";

/** One device of a snapshot and its image. */
export interface SnapshotImageInfo {
  /** The device's id. */
  deviceId: string;
  /**
   * Where to read the image, absent before take: its NBD URI
   * (`nbd://HOST:PORT/<device>@<snapshot-id>`, or `nbd+unix:///...?socket=PATH`)
   * when the service serves NBD, else (kernel backend without NBD) the
   * image's `/dev/...` path.
   */
  locator?: string;
  /**
   * Kernel backend, after take: the image's block device on the service's
   * host (`/dev/blksnap-<major>-<minor>` upstream,
   * `/dev/veeamblksnapimg_<major>:<minor>` out of tree), whatever the locator.
   */
  imageDevicePath?: string;
  /** 0, or the errno that corrupted this device's image (28 for ENOSPC). */
  errorCode: number;
  /** Name of `errorCode` ("ENOSPC") when it is not 0. */
  errorName?: string;
  /**
   * After take: the change token of this image (device, CBT generation and
   * change number right after the take; see change_token.ts).
   */
  changeToken?: string;
  /**
   * After take: the token of the device's previous snapshot in the same CBT
   * generation, which "changes" answers relative to by default; absent when
   * there is none (first snapshot of a generation).
   */
  previousChangeToken?: string;
}

/** Usage of a snapshot's difference storage. */
export interface DiffStorageInfo {
  /** The path given at create. */
  path: string;
  /** Current size of the storage in bytes. */
  capacityBytes: number;
  /** Bytes handed out to chunks. */
  usedBytes: number;
  /** The limit in bytes. */
  limitBytes: number;
}

/** Options of {@link SnapshotDriver.takeSnapshot}. */
export interface TakeOptions {
  /**
   * Freeze the file systems mounted on the snapshot's devices (and their
   * partitions) around the take (default true). Backends ignore it; the
   * consistency wrapper (src/consistency) acts on it.
   */
  freeze?: boolean;
}

/** One mounted file system and what happened to it around a take. */
export interface FrozenFilesystem {
  /** Where it is mounted. */
  mountPoint: string;
  /** Its type ("ext4"). */
  fsType: string;
  /** The block device it is on ("vdb1", "nbd0p1", "dm-0"). */
  blockDevice: string;
  /** Whether it was frozen. */
  frozen: boolean;
  /** Milliseconds it stayed frozen, when it was. */
  frozenMs?: number;
  /** Why it was not frozen or not thawed cleanly. */
  error?: string;
}

/** A hook that ran around a take. */
export interface HookRunInfo {
  /** The hook's file name. */
  name: string;
  /** "pre" (before the freeze) or "post" (after the thaw). */
  phase: "pre" | "post";
  /** Exit status; absent when killed. */
  exitCode?: number;
  /** Whether it was killed at its timeout. */
  timedOut: boolean;
  /** Milliseconds it ran. */
  durationMs: number;
}

/** What was done to make a take consistent. */
export interface ConsistencyReport {
  /** Whether freezing was asked for. */
  freeze: boolean;
  /**
   * Per device, the file systems found on it (empty when none, or freeze was
   * off), and why they could not be looked for, if so.
   */
  devices: Array<{ deviceId: string; filesystems: FrozenFilesystem[]; error?: string }>;
  /** The hooks that ran. */
  hooks: HookRunInfo[];
  /** True when the freeze limit passed before the take returned, so the thaw came first. */
  thawedEarly: boolean;
}

/** A snapshot and its devices. */
export interface SnapshotInfo {
  /** UUID. */
  id: string;
  /** Current state. */
  state: SnapshotState;
  /** Whether images accept writes. */
  writable: boolean;
  /** ISO-8601 time of creation. */
  createdAt: string;
  /** ISO-8601 time of take. */
  takenAt?: string;
  /** Per device: image and error. */
  devices: SnapshotImageInfo[];
  /** Storage usage; absent where the backend cannot tell (kernel). */
  storage?: DiffStorageInfo;
  /** How the take was made consistent (freeze, hooks); absent without the consistency wrapper. */
  consistency?: ConsistencyReport;
}

/** The difference storage overflowed or failed: the snapshot's images are unusable. */
export interface CorruptedEvent {
  /** Event kind. */
  code: "corrupted";
  /** Milliseconds since the epoch. */
  timeMs: number;
  /** The device whose image is corrupted, when known. */
  deviceId?: string;
  /** The errno that corrupted it (28 for ENOSPC). */
  errorCode: number;
  /** Name of `errorCode`. */
  errorName?: string;
}

/** The difference storage reached its limit or needs to grow. */
export interface NoSpaceEvent {
  /** Event kind. */
  code: "no_space";
  /** Milliseconds since the epoch. */
  timeMs: number;
  /** How many sectors the storage asked for. */
  requestedSectors: number;
}

/** A snapshot event. */
export type SnapshotEvent = CorruptedEvent | NoSpaceEvent;

/** The most events a snapshot's log holds; older ones are dropped first. */
export const EVENT_LOG_CAPACITY = 1024;

/** A snapshot event with its place in the snapshot's event log. */
export type LoggedEvent = SnapshotEvent & {
  /**
   * Increasing id within the snapshot's log. Ids are unique across restarts
   * of the service: a log numbers from its creation time in ms times 1000.
   */
  id: number;
};

/** What {@link SnapshotDriver.waitEvents} answers. */
export interface EventPage {
  /** The events after the asked id, oldest first (empty on timeout or abort). */
  events: LoggedEvent[];
  /** The newest id the log has given out: ask `after` this next. */
  lastId: number;
  /**
   * True when events after the asked id are no longer in the log (it holds
   * at most {@link EVENT_LOG_CAPACITY}, or the id is from an earlier life of
   * the service): the consumer missed some.
   */
  truncated: boolean;
}

/** Options of {@link SnapshotDriver.waitEvents}. */
export interface WaitEventsOptions {
  /** Answer the events with ids above this (default 0: every event the log holds). */
  after?: number;
  /** How long to wait for at least one, in ms (0 answers at once). */
  timeoutMs: number;
  /** Ends the wait early with no events. */
  signal?: AbortSignal;
}

/** Counters a backend can report for metrics (absent where it cannot tell). */
export interface DriverStats {
  /** Chunks copied before their first overwrite, since start. */
  cowCopies?: number;
  /** Chunks written to difference storage, since start. */
  chunksStored?: number;
  /** Snapshot events raised, since start. */
  events?: number;
}

/** The one interface both backends implement. Every method rejects with a ServiceError. */
export interface SnapshotDriver {
  /** Backend kind, profile, module version and capabilities. */
  version(): Promise<DriverVersion>;

  /** Starts tracking the device at `path`. CONFLICT if already attached, NOT_FOUND if missing. */
  attach(path: string, options?: AttachOptions): Promise<DeviceInfo>;
  /** Stops tracking (drops the CBT). CONFLICT while the device is in a snapshot. */
  detach(deviceId: string): Promise<void>;
  /** All attached devices. */
  listDevices(): Promise<DeviceInfo[]>;
  /** One attached device. NOT_FOUND when unknown. */
  getDevice(deviceId: string): Promise<DeviceInfo>;

  /** CBT info of a device. */
  cbtInfo(deviceId: string): Promise<CbtInfo>;
  /** `length` bytes of the CBT read map from block `offset`. OUT_OF_RANGE past the end. */
  readCbtMap(deviceId: string, range: { offset: number; length: number }): Promise<Uint8Array>;
  /** Marks sector ranges dirty in both CBT tables. */
  markDirty(deviceId: string, ranges: SectorRange[]): Promise<void>;

  /** Creates a snapshot holding the given devices. CONFLICT if one is in another snapshot. */
  createSnapshot(options: CreateSnapshotOptions): Promise<SnapshotInfo>;
  /** Adds a device to a created (not yet taken) snapshot. */
  addDevice(snapshotId: string, deviceId: string): Promise<SnapshotInfo>;
  /** Takes the snapshot atomically across its devices. CONFLICT if already taken. */
  takeSnapshot(snapshotId: string, options?: TakeOptions): Promise<SnapshotInfo>;
  /** All snapshots. */
  listSnapshots(): Promise<SnapshotInfo[]>;
  /** One snapshot. NOT_FOUND when unknown. */
  snapshotInfo(snapshotId: string): Promise<SnapshotInfo>;
  /** Destroys the snapshot and its images; the devices stay attached. */
  destroySnapshot(snapshotId: string): Promise<void>;
  /**
   * The events of the snapshot's log after `options.after`, waiting up to
   * `timeoutMs` for at least one; every caller sees every event (nothing is
   * taken from the log). An aborted wait answers at once with no events.
   * INVALID_ARGUMENT for a bad timeout or id; NOT_FOUND for an unknown
   * snapshot or one destroyed while waiting.
   */
  waitEvents(snapshotId: string, options: WaitEventsOptions): Promise<EventPage>;

  /** Size in bytes of a device's image in a taken snapshot. */
  imageSize(snapshotId: string, deviceId: string): Promise<number>;
  /**
   * Reads `into.length` bytes of the image from byte `offset` into `into`.
   * OUT_OF_RANGE past the end, SNAPSHOT_CORRUPTED after overflow.
   */
  readImage(snapshotId: string, deviceId: string, offset: number, into: Uint8Array): Promise<void>;

  /** Counters for metrics; optional. */
  stats?(): Promise<DriverStats>;

  /** Releases everything: destroys snapshots the driver made, stops servers, closes files. */
  close(): Promise<void>;
}
