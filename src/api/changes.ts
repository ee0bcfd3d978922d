/**
 * Changed extents of a device from its CBT read map, for incremental backup:
 * the blocks whose change number is above `since` (by default the changes
 * number minus one, i.e. blocks changed since the previous snapshot),
 * merged into byte extents clipped to the capacity.
 *
 * @module
 */

import type { SnapshotDriver } from "../driver.ts";

/** A byte extent. */
export interface Extent {
  /** First byte. */
  offset: number;
  /** Number of bytes. */
  length: number;
}

/** The changes of one device. */
export interface DeviceChanges {
  /** CBT generation the numbers belong to. */
  generationId: string;
  /** The changes number of the latest snapshot. */
  changesNumber: number;
  /** Blocks with a number above this are reported. */
  since: number;
  /** Tracking block size in bytes. */
  blockSizeBytes: number;
  /** Device capacity in bytes. */
  capacityBytes: number;
  /** Sum of the extents' lengths. */
  changedBytes: number;
  /** Changed byte extents, ascending and merged. */
  extents: Extent[];
}

const MAP_PIECE_BLOCKS = 1 << 20;

/** Reads the device's CBT map in pieces and returns the changed extents. */
export async function readChanges(
  driver: SnapshotDriver,
  deviceId: string,
  options: { since?: number } = {},
): Promise<DeviceChanges> {
  const info = await driver.cbtInfo(deviceId);
  const since = options.since ?? Math.max(0, info.changesNumber - 1);
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
    const map = await driver.readCbtMap(deviceId, { offset: first, length });
    for (let i = 0; i < map.length; i++) {
      const changed = map[i] > since;
      if (changed && runStart < 0) runStart = first + i;
      else if (!changed && runStart >= 0) closeRun(first + i);
    }
  }
  if (runStart >= 0) closeRun(info.blockCount);
  return {
    generationId: info.generationId,
    changesNumber: info.changesNumber,
    since,
    blockSizeBytes: info.blockSizeBytes,
    capacityBytes: info.capacityBytes,
    changedBytes,
    extents,
  };
}
