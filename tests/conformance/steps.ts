/**
 * The building blocks of the conformance cases: how a case is declared
 * ({@link CaseList}), the sizes the cases use, and the steps most of them
 * take (attach a new device, create or take a snapshot, read a whole image).
 *
 * Sizes: {@link SMALL} devices (1 MiB + 4 KiB) have 17 tracking blocks of
 * 64 KiB, the last one short; 2, 4 and 16 MiB devices have 8, 16 and 64
 * chunks of 256 KiB (the kernel's minimum chunk). Writes are 4 KiB-aligned so
 * that page-cache writeback on a real block device touches exactly the
 * blocks written.
 *
 * @module
 */

import type { DeviceInfo, SnapshotInfo } from "../../src/driver.ts";
import type { ConformanceFeature, ConformanceFixture, ConformanceTarget } from "./fixture.ts";

/** Bytes in a KiB. */
export const KiB = 1024;
/** Bytes in a MiB. */
export const MiB = 1024 * KiB;
/** A device of 17 tracking blocks of 64 KiB, the last one 4 KiB long. */
export const SMALL = MiB + 4 * KiB;
/** The difference storage limit of snapshots that are not meant to overflow. */
export const STORAGE_LIMIT = 64 * MiB;
/** Every capability name the seam defines. */
export const CAPABILITIES: readonly string[] = [
  "cbt",
  "cbt-dirty",
  "writable-images",
  "image-read",
  "nbd-exports",
  "events",
  "multi-device-snapshots",
];

/** The body of a case: it gets a fresh fixture (cleaned up after it) and the target. */
export type CaseBody = (fx: ConformanceFixture, target: ConformanceTarget) => Promise<void>;

/** One conformance case. */
export interface ConformanceCase {
  /** The behaviour it checks, as the test's name. */
  readonly name: string;
  /** Features it needs; it is skipped on targets that lack one. */
  readonly needs: readonly ConformanceFeature[];
  /** The case. */
  readonly body: CaseBody;
}

/** The cases of one file, in declaration order. */
export class CaseList {
  readonly #cases: ConformanceCase[] = [];

  /** Declares a case that checks `name`, needing `needs`. */
  add(name: string, needs: ConformanceFeature[], body: CaseBody): void {
    this.#cases.push({ name, needs, body });
  }

  /** The cases declared so far. */
  get all(): readonly ConformanceCase[] {
    return [...this.#cases];
  }
}

/** Creates a device of `sizeBytes` (with `content`) and attaches it under its default name. */
export async function attachNew(
  fx: ConformanceFixture,
  sizeBytes: number,
  content?: Uint8Array,
): Promise<DeviceInfo> {
  return await fx.driver.attach(await fx.createDevice(sizeBytes, { content }));
}

/** Creates a snapshot of `devices` on a fresh storage path limited to `limitBytes`. */
export async function createSnapshot(
  fx: ConformanceFixture,
  devices: DeviceInfo[],
  limitBytes: number = STORAGE_LIMIT,
): Promise<SnapshotInfo> {
  return await fx.driver.createSnapshot({
    deviceIds: devices.map((d) => d.id),
    diffStorage: { path: await fx.storagePath(), limitBytes },
  });
}

/** Creates and takes a snapshot of `devices`. */
export async function takeNew(
  fx: ConformanceFixture,
  devices: DeviceInfo[],
): Promise<SnapshotInfo> {
  const created = await createSnapshot(fx, devices);
  return await fx.driver.takeSnapshot(created.id);
}

/** Reads a whole image of `sizeBytes` through `readImage()`, `pieceBytes` at a time. */
export async function readWholeImage(
  fx: ConformanceFixture,
  image: { snapshotId: string; deviceId: string; sizeBytes: number },
  pieceBytes: number = 64 * KiB,
): Promise<Uint8Array> {
  const { snapshotId, deviceId, sizeBytes } = image;
  const bytes = new Uint8Array(sizeBytes);
  for (let offset = 0; offset < sizeBytes; offset += pieceBytes) {
    const piece = bytes.subarray(offset, Math.min(offset + pieceBytes, sizeBytes));
    await fx.driver.readImage(snapshotId, deviceId, offset, piece);
  }
  return bytes;
}
