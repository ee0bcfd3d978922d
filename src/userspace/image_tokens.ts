/**
 * The change tokens of a userspace snapshot image, from the CBT positions
 * the engine recorded at take (change_token.ts has the rules).
 *
 * @module
 */

import { encodeChangeToken, pointOf, previousPoint } from "../change_token.ts";
import type { Snapshot } from "../engine/snapshot.ts";
import type { Tracker } from "../engine/tracker.ts";

/** An image's token and its previous snapshot's token. */
export interface ImageTokens {
  /** The image's change token. */
  changeToken?: string;
  /** The token of the device's previous snapshot in the same generation, if any. */
  previousChangeToken?: string;
}

/** The change tokens of `deviceId`'s image in `snapshot` (none before take). */
export function imageTokens(snapshot: Snapshot, deviceId: string): ImageTokens {
  const atTake = snapshot.cbtAtTake(deviceId);
  if (!atTake) return {};
  const point = pointOf(deviceId, atTake.after);
  const previous = previousPoint(point, atTake.before);
  return {
    changeToken: encodeChangeToken(point),
    ...(previous ? { previousChangeToken: encodeChangeToken(previous) } : {}),
  };
}

/**
 * The image's tokens while `tracker`'s CBT is still the one the snapshot was
 * taken with; none once it is not (its CBT contexts then mean nothing for
 * this snapshot).
 */
export function currentImageTokens(snapshot: Snapshot, tracker: Tracker): ImageTokens {
  const atTake = snapshot.cbtAtTake(tracker.name);
  const info = tracker.cbt.info();
  if (
    !atTake || tracker.cbt.isCorrupted || info.generationId !== atTake.after.generationId ||
    info.changesNumber !== atTake.after.changesNumber
  ) {
    return {};
  }
  return imageTokens(snapshot, tracker.name);
}
