/**
 * The NBD export of a snapshot image, named `<device>@<snapshot-id>`:
 * read-only unless the snapshot was created writable (image writes modify
 * the chunk's copy and mark both CBT tables, as in the seeds). Its metadata
 * contexts are the device's CBT, so one connection gives both the data as
 * of take time and what changed since the previous snapshot. Its
 * `base:allocation` has the origin's holes where chunks were never copied
 * (allocation.ts), so sparse copies of an image stay sparse. It ends when
 * the snapshot is destroyed (NbdExport.ended).
 *
 * @module
 */

import type { SnapshotImage } from "../engine/image.ts";
import type { Snapshot } from "../engine/snapshot.ts";
import type { Tracker } from "../engine/tracker.ts";
import type { NbdExport, NbdExtent } from "../nbd/export.ts";
import { cbtContextNames, cbtExtents } from "../cbt_contexts.ts";
import { imageExportName } from "../export_names.ts";
import { holesPossible, imageAllocation, storeAllocation } from "./allocation.ts";
import { currentImageTokens } from "./image_tokens.ts";
import { ENGINE_BLOCK_SIZE } from "./device_export.ts";

/**
 * Serves the image of `tracker`'s device in the taken `snapshot`. Its
 * description and metadata context names carry the image's change tokens
 * while the device's CBT is still the one it was taken with.
 */
export function imageExport(snapshot: Snapshot, tracker: Tracker): NbdExport {
  const snapshotId = snapshot.id;
  const image: SnapshotImage = snapshot.image(tracker.name);
  const tokens = currentImageTokens(snapshot, tracker);
  const origin = storeAllocation(tracker.store);
  const holes = origin && holesPossible(tracker.store, origin);
  const table = image.diffArea.table;
  return {
    name: imageExportName(tracker.name, snapshotId),
    description:
      `${
        image.writable ? "writable" : "read-only"
      } image of ${tracker.name} in snapshot ${snapshotId}` +
      (tokens.changeToken ? `; change token ${tokens.changeToken}` : "") +
      (tokens.previousChangeToken
        ? `; dirty bitmap since change token ${tokens.previousChangeToken}`
        : ""),
    sizeBytes: image.sizeBytes,
    readOnly: !image.writable,
    blockSize: ENGINE_BLOCK_SIZE,
    canMultiConn: true,
    ended: snapshot.ended,
    get reportsHoles() {
      return holes?.() ?? false;
    },
    read: (offset, into) => image.read(offset, into),
    write: (offset, data) => image.write(offset, data),
    flush: () => image.flush(),
    metaContexts: () => cbtContextNames(currentImageTokens(snapshot, tracker)),
    blockStatus(context, offset, length): Promise<NbdExtent[]> {
      if (context === "base:allocation") {
        return Promise.resolve(imageAllocation(table, origin, { offset, length }));
      }
      return Promise.resolve(
        cbtExtents(tracker.cbt, context, { offset, length, sizeBytes: image.sizeBytes }),
      );
    },
  };
}
