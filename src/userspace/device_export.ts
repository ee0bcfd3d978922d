/**
 * The NBD export of a tracked device: read-write, every write through the
 * engine's tracker (CBT marking and copy-on-write), so the device must be
 * used through this export (or the NBD client's /dev/nbdX) for tracking to
 * see its writes.
 *
 * TRIM is accepted as the hint it is and changes nothing, so it needs no
 * copy-on-write and leaves the CBT alone; WRITE_ZEROES is a write of zeros
 * (tracked, copied-on-write) and is never "fast". `base:allocation` reports
 * a regular file's holes (allocation.ts); a block device is all data.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import type { Tracker } from "../engine/tracker.ts";
import type { NbdExport, NbdExtent } from "../nbd/export.ts";
import { encodeChangeToken } from "../change_token.ts";
import { cbtContextNames, cbtExtents } from "../cbt_contexts.ts";
import { holesPossible, storeAllocation } from "./allocation.ts";

/** NBD block size constraints of engine exports. */
export const ENGINE_BLOCK_SIZE = { minimum: 1, preferred: 4096, maximum: 32 << 20 };

/** Serves `tracker`'s device under `name`. */
export function deviceExport(tracker: Tracker): NbdExport {
  const allocation = storeAllocation(tracker.store);
  const holes = allocation && holesPossible(tracker.store, allocation);
  return {
    name: tracker.name,
    description: `tracked device ${tracker.name} (${tracker.store.name})`,
    get sizeBytes() {
      return tracker.capacityBytes;
    },
    readOnly: false,
    blockSize: ENGINE_BLOCK_SIZE,
    canMultiConn: true,
    get reportsHoles() {
      return holes?.() ?? false;
    },
    read: (offset, into) => tracker.read(offset, into),
    async write(offset, data, { fua }) {
      await tracker.write(offset, data);
      if (fua) await tracker.flush();
    },
    flush: () => tracker.flush(),
    trim: () => Promise.resolve(),
    async writeZeroes(offset, length, { fastZero, fua }) {
      if (fastZero) {
        throw new ServiceError(
          "NOT_SUPPORTED",
          "Zeroing a tracked device is a tracked write, not fast",
        );
      }
      await tracker.writeZeroes(offset, length);
      if (fua) await tracker.flush();
    },
    metaContexts: () => {
      const { generationId, changesNumber } = tracker.cbt.info();
      return cbtContextNames(
        changesNumber >= 1 && !tracker.cbt.isCorrupted
          ? {
            changeToken: encodeChangeToken({
              deviceId: tracker.name,
              generationId,
              changeNumber: changesNumber,
            }),
          }
          : {},
      );
    },
    blockStatus(context, offset, length): Promise<NbdExtent[]> {
      if (context === "base:allocation") {
        return Promise.resolve(allocation?.(offset, length) ?? [{ length, flags: 0 }]);
      }
      return Promise.resolve(
        cbtExtents(tracker.cbt, context, { offset, length, sizeBytes: tracker.capacityBytes }),
      );
    },
  };
}
