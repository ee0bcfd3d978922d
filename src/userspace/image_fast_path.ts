/**
 * The Worker fast path of a read-only snapshot image's export
 * (src/nbd/worker/fast_path.ts ImageView): Workers read the image
 * themselves, chunks still NEW from the original device's file and STORED
 * ones from the difference storage's file, each on a descriptor of their
 * own; chunks in transition (their data in a buffer), a corrupted area and
 * a snapshot being destroyed go to the owner as before.
 *
 * Design note: the rules that keep a Worker's read as exact as the owner's
 * (src/engine/image.ts read).
 * - A chunk leaves NEW before the device is written over it (copy-on-write
 *   first), and a STORED chunk's storage bytes never change in a read-only
 *   snapshot. So a Worker reads a NEW run from the original, then loads the
 *   states again: a chunk still NEW was read before any write over it; one
 *   now STORED is read again from the storage; any other state sends the
 *   request to the owner. The owner stores a chunk's offset before its
 *   STORED state, with Atomics.
 * - Destroy stops copy-on-write only after image reads are over: a Worker
 *   adds one to the area's IMAGE_IO, then checks STOPPING (else it asks the
 *   owner, which answers UNAVAILABLE); destroy sets STOPPING, then waits for
 *   IMAGE_IO to drop to 0 (DiffArea.stopImageIo). The same check after the
 *   read, and of CORRUPTED, sends a read that raced either to the owner.
 * - Writable images, memory stores and unnamed files get no fast path.
 *
 * @module
 */

import type { Snapshot } from "../engine/snapshot.ts";
import { type Tracker, WriteGate } from "../engine/tracker.ts";
import { ServiceError } from "../errors.ts";
import type { FastPath, FastPathView } from "../nbd/worker/fast_path.ts";
import { gateOpen, identityView, reopenable } from "./fast_path_views.ts";

/** The fast path of the image of `tracker`'s device in the taken `snapshot`. */
export function imageFastPath(snapshot: Snapshot, tracker: Tracker): FastPath {
  const gate = tracker.gate;
  return {
    async view(): Promise<FastPathView | undefined> {
      await gateOpen(gate);
      if (snapshot.state !== "taken") return undefined;
      const image = snapshot.image(tracker.name);
      const area = image.diffArea;
      const storage = area.storage.store;
      if (image.writable || !reopenable(tracker.store) || !reopenable(storage)) return undefined;
      return {
        epoch: Atomics.load(gate, WriteGate.FREEZES),
        path: tracker.store.name,
        identity: identityView(tracker.store),
        gate: gate.buffer as SharedArrayBuffer,
        image: {
          storagePath: storage.name,
          storageIdentity: identityView(storage),
          table: area.table.buffer,
          statesOffset: area.table.states.byteOffset,
          count: area.table.count,
          shift: area.table.shift,
          sizeBytes: image.sizeBytes,
          control: area.control.buffer,
        },
      };
    },
    prepareWrite(): Promise<void> {
      return Promise.reject(
        new ServiceError("INTERNAL", "A snapshot image's fast path takes no writes"),
      );
    },
  };
}
