/**
 * A minimal NbdExport over the engine's Tracker, for the benchmarks: every
 * write goes through the tracker (CBT marking, copy-on-write after a take).
 * The userspace backend has its own, complete export; this one only serves
 * to measure the NBD server with the engine's write path behind it.
 *
 * @module
 */

import type { Tracker } from "../../src/engine/tracker.ts";
import { ServiceError } from "../../src/errors.ts";
import type { NbdExport } from "../../src/nbd/export.ts";

/** The tracked device `tracker` as a read-write export named `name`. */
export function trackerExport(tracker: Tracker, name: string): NbdExport {
  return {
    name,
    description: `tracked device ${tracker.name}`,
    sizeBytes: tracker.capacityBytes,
    readOnly: false,
    canMultiConn: true,
    read: (offset, into) => tracker.read(offset, into),
    write: async (offset, data, options) => {
      await tracker.write(offset, data);
      if (options.fua) await tracker.flush();
    },
    flush: () => tracker.flush(),
    writeZeroes: async (offset, length, options) => {
      if (options.fastZero) {
        throw new ServiceError("NOT_SUPPORTED", "Cannot zero fast: zeroes are written as data");
      }
      await tracker.writeZeroes(offset, length);
      if (options.fua) await tracker.flush();
    },
  };
}
