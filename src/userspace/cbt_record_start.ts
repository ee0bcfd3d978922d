/**
 * Starting a device's CBT record (cbt_journal.ts) when it is attached or
 * re-attached at start: with `restore`, the saved record comes back into the
 * tracker's map when the service can vouch for it (device_identity.ts),
 * else the device keeps the new generation it got and the reason is
 * logged; then a whole record of the map is written and journaling starts.
 * The tracker is frozen meanwhile, so no write can slip between.
 *
 * @module
 */

import type { Tracker } from "../engine/tracker.ts";
import type { NbdLogger } from "../nbd/mod.ts";
import type { FileStore } from "../store/file_store.ts";
import { CbtJournal, cbtRecordPath, loadCbtRecord } from "./cbt_journal.ts";
import { deviceIdentity, distrust } from "./device_identity.ts";

/** Options of {@link startCbtRecord}. */
export interface StartCbtRecordOptions {
  /** The device's path. */
  path: string;
  /** Its open store. */
  store: FileStore;
  /** The state folder holding the records. */
  stateDir: string;
  /** Bring the saved record back first (a start), rather than begin from the fresh map. */
  restore: boolean;
  /** Log sink. */
  logger?: NbdLogger;
}

/**
 * Starts the record of `tracker`'s CBT and makes the tracker's writes wait
 * for it. Resolves to the journal and whether the map came back from a
 * record closed cleanly (nothing wrote to the device while stopped).
 * Rejects with the file-system error when the record cannot be written.
 */
export async function startCbtRecord(
  tracker: Tracker,
  options: StartCbtRecordOptions,
): Promise<{ journal: CbtJournal; vouched: boolean }> {
  const { path, store, logger } = options;
  const recordPath = cbtRecordPath(options.stateDir, tracker.name);
  let vouched = false;
  await tracker.freeze();
  try {
    const identity = await deviceIdentity(path, store);
    if (options.restore) {
      const { record, problem } = await loadCbtRecord(recordPath);
      let reason = problem ?? (record ? distrust(record, identity) : "it has no CBT record");
      if (record && reason === undefined) {
        try {
          tracker.cbt.restoreState(record.state);
          vouched = record.clean;
          if (!record.clean) {
            logger?.(
              "warn",
              `userspace: ${tracker.name}: the service stopped uncleanly; its CBT is restored ` +
                "as a superset of the changes (write-intent record)",
            );
          }
        } catch (error) {
          reason = (error as Error).message;
        }
      }
      if (reason !== undefined) {
        logger?.(
          "warn",
          `userspace: ${tracker.name}: new CBT generation ${tracker.cbt.generationId}: ${reason}`,
        );
      }
    }
    const journal = await CbtJournal.open(recordPath, tracker.cbt, { identity, logger });
    tracker.setWriteIntent(journal);
    return { journal, vouched };
  } finally {
    tracker.unfreeze();
  }
}
