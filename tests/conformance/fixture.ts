/**
 * What the SnapshotDriver conformance suite (driver_conformance.ts) needs
 * from a backend: a {@link ConformanceTarget} says, once, what the backend
 * cannot do (each with the reason printed when its cases are skipped) and
 * how to set up a {@link ConformanceFixture} for one case; the fixture gives
 * the driver and the peers a backup tool would use beside it (devices to
 * attach, writers and readers of those devices, difference-storage paths).
 *
 * Every case sets up its own fixture and cleans it up, so cases are
 * independent and a failed case leaves nothing behind for the next one.
 *
 * @module
 */

import type { BackendKind, DeviceInfo, SnapshotDriver } from "../../src/driver.ts";

/**
 * Things a target may lack. Cases that need one are skipped, with the
 * target's reason, when it is listed in {@link ConformanceTarget.unsupported}.
 *
 * - `data`: writes through {@link ConformanceFixture.writeDevice} reach the
 *   device's blocks, the CBT sees them, and images read the data as it was
 *   at take time.
 * - `overflow`: a small difference storage really fills up when the device
 *   is written after take (copy-on-write into a real storage).
 * - `large-devices`: {@link ConformanceFixture.createDevice} can make sparse
 *   devices of more than 128 GiB (tracking blocks above the minimum size).
 * - `destroy-while-reading`: image reads may be in flight when the snapshot
 *   is destroyed.
 * - `cbt-faults`: {@link ConformanceFixture.corruptCbt} corrupts a device's
 *   CBT map as a failed marking does.
 */
export type ConformanceFeature =
  | "data"
  | "overflow"
  | "large-devices"
  | "destroy-while-reading"
  | "cbt-faults";

/** One backend set up for the suite. */
export interface ConformanceTarget {
  /** Prefix of every case name, e.g. "userspace" or "kernel (outoftree)". */
  name: string;
  /** The backend kind version() must report. */
  backend: BackendKind;
  /** Features this target lacks, each with the reason shown when its cases are skipped. */
  unsupported?: Partial<Record<ConformanceFeature, string>>;
  /** When set, every case is skipped with this reason (e.g. no module loaded). */
  ignore?: string;
  /** Called for every skipped case with its full name and the reason (e.g. for a lab report). */
  onSkip?: (caseName: string, reason: string) => void;
  /** Deno.test sanitizers (all on by default). */
  sanitizeOps?: boolean;
  /** Deno.test sanitizers (all on by default). */
  sanitizeResources?: boolean;
  /** Sets up a fresh fixture for one case. */
  setup(): Promise<ConformanceFixture>;
}

/** Options of {@link ConformanceFixture.createDevice}. */
export interface CreateDeviceOptions {
  /** Initial content (at most the device's size; the rest reads as zeros). */
  content?: Uint8Array;
}

/** A backend, its driver and the peers around it, for one case. */
export interface ConformanceFixture {
  /** The driver under test (started). */
  readonly driver: SnapshotDriver;
  /**
   * Makes a new, unattached device of `sizeBytes` (a multiple of 4096) and
   * returns the absolute path to pass to `driver.attach()`. The content is
   * written before the device is attached, so the CBT does not see it.
   */
  createDevice(sizeBytes: number, options?: CreateDeviceOptions): Promise<string>;
  /**
   * Writes `data` at byte `offset` of an attached device so that the backend
   * sees the write (userspace: through the device's NBD export, i.e. its
   * locator; kernel: pwrite and fsync on the device node), and resolves once
   * the write is complete.
   */
  writeDevice(device: DeviceInfo, offset: number, data: Uint8Array): Promise<void>;
  /** Corrupts the device's CBT map, as a marking beyond the map does (feature `cbt-faults`). */
  corruptCbt?(device: DeviceInfo): Promise<void>;
  /** Reads `length` bytes at `offset` of the device as it is now (its original data). */
  readDevice(device: DeviceInfo, offset: number, length: number): Promise<Uint8Array>;
  /**
   * A fresh absolute path for a difference storage: a regular file that does
   * not exist yet, in an existing directory that holds none of the fixture's
   * device nodes (cases also use that directory itself as a directory
   * storage, and as a path that is not a device).
   */
  storagePath(): Promise<string>;
  /**
   * Releases everything the case left: writers, snapshots, attached devices
   * (the kernel driver's close() leaves devices attached, so a kernel fixture
   * detaches them first), the driver, device nodes and temp files. Called
   * once per case, also after a failure; the case may have destroyed or
   * detached some of it already.
   */
  cleanup(): Promise<void>;
}
