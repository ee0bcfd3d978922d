/**
 * Changed extents of one image, for incremental backup: complete, or an
 * explicit FULL_BACKUP_REQUIRED, never anything in between.
 *
 * Design note: the image's change token (recorded at take) says which CBT
 * state belongs to the snapshot; the base is the `since` token (or bare
 * number with its generation), by default the device's previous snapshot
 * (change_token.ts has the rules). The CBT is checked to still be the
 * snapshot's before and after the map is read (a module reload, a resize or
 * a restart that lost the CBT answer `generation_changed`), a corrupted map
 * answers `cbt_corrupted`, and the blocks whose read-table number ranks
 * above the base's are merged into byte extents clipped to the capacity.
 *
 * @module
 */

import {
  type ChangePoint,
  changeRank,
  checkCbtBelongs,
  decodeChangeToken,
  encodeChangeToken,
  fullBackupRequired,
  isCbtCorruption,
  resolveSince,
} from "../change_token.ts";
import type { SnapshotDriver, SnapshotImageInfo } from "../driver.ts";

/** A byte extent. */
export interface Extent {
  /** First byte. */
  offset: number;
  /** Number of bytes. */
  length: number;
}

/** The changes of one image. */
export interface ImageChanges {
  /** The image's change token. */
  changeToken: string;
  /** The token of the snapshot the changes are relative to (absent for a bare number 0). */
  sinceToken?: string;
  /** CBT generation the numbers belong to. */
  generationId: string;
  /** The change number of this snapshot. */
  changesNumber: number;
  /** The change number the changes are relative to. */
  since: number;
  /** Tracking block size in bytes. */
  blockSize: number;
  /** Device capacity in bytes. */
  capacityBytes: number;
  /** Sum of the extents' lengths. */
  changedBytes: number;
  /** Changed byte extents, ascending and merged. */
  extents: Extent[];
}

/** Options of {@link readChanges}. */
export interface ReadChangesOptions {
  /** A change token, or a bare change number with `generation`. */
  since?: string;
  /** The CBT generation of a bare change number. */
  generation?: string;
}

const MAP_PIECE_BLOCKS = 1 << 20;

async function readMap(
  driver: SnapshotDriver,
  deviceId: string,
  range: { offset: number; length: number },
): Promise<Uint8Array> {
  try {
    return await driver.readCbtMap(deviceId, range);
  } catch (error) {
    if (!isCbtCorruption(error)) throw error;
    throw fullBackupRequired(
      "cbt_corrupted",
      `The CBT map of device ${deviceId} is corrupted; it is reset at the next take`,
    );
  }
}

/**
 * The extents of a taken `image` changed since `options.since` (default:
 * the previous snapshot). FULL_BACKUP_REQUIRED with a reason when that
 * cannot be answered completely.
 */
export async function readChanges(
  driver: SnapshotDriver,
  image: SnapshotImageInfo,
  options: ReadChangesOptions = {},
): Promise<ImageChanges> {
  const { deviceId } = image;
  if (!image.changeToken) {
    throw fullBackupRequired(
      "generation_changed",
      `The CBT position of device ${deviceId} at this snapshot is unknown (the device is gone)`,
    );
  }
  const point = decodeChangeToken(image.changeToken);
  const previous: ChangePoint | undefined = image.previousChangeToken
    ? decodeChangeToken(image.previousChangeToken)
    : undefined;
  const base = resolveSince(point, {
    since: options.since,
    generation: options.generation,
    previous,
  });
  const info = await driver.cbtInfo(deviceId);
  checkCbtBelongs(point, info);
  const threshold = changeRank(base.changeNumber);
  const extents: Extent[] = [];
  let changedBytes = 0;
  let runStart = -1;
  const closeRun = (endBlock: number) => {
    const offset = runStart * info.blockSizeBytes;
    const length = Math.min(endBlock * info.blockSizeBytes, info.capacityBytes) - offset;
    extents.push({ offset, length });
    changedBytes += length;
    runStart = -1;
  };
  for (let first = 0; first < info.blockCount; first += MAP_PIECE_BLOCKS) {
    const length = Math.min(MAP_PIECE_BLOCKS, info.blockCount - first);
    const map = await readMap(driver, deviceId, { offset: first, length });
    for (let i = 0; i < map.length; i++) {
      const changed = map[i] > threshold;
      if (changed && runStart < 0) runStart = first + i;
      else if (!changed && runStart >= 0) closeRun(first + i);
    }
  }
  if (runStart >= 0) closeRun(info.blockCount);
  checkCbtBelongs(point, await driver.cbtInfo(deviceId));
  return {
    changeToken: image.changeToken,
    ...(base.changeNumber > 0 ? { sinceToken: encodeChangeToken(base) } : {}),
    generationId: point.generationId,
    changesNumber: point.changeNumber,
    since: base.changeNumber,
    blockSize: info.blockSizeBytes,
    capacityBytes: info.capacityBytes,
    changedBytes,
    extents,
  };
}
