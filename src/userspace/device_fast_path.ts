/**
 * The Worker fast path of a tracked device's export (src/nbd/worker/fast_path.ts):
 * Workers read and write the device's file themselves, inside the tracker's
 * write gate, marking the CBT write table that the tracker shares. The view
 * is made only while the gate is open and carries the gate's FREEZES count:
 * take, destroy, detach and a CBT reset all happen while frozen, so a view
 * of the same count still holds the tables in use. Marking stays with the
 * owner while the device has a write-intent record (CBT persistence): the
 * record of a block's first mark must be durable before the data reaches the
 * device (cbt_journal.ts), so a Worker finding an unmarked block asks the
 * owner to prepare the write, as it does for a chunk still NEW under a taken
 * snapshot (copy-on-write first). Memory stores and unnamed files cannot be
 * opened again by a Worker: they get no fast path.
 *
 * @module
 */

import { CBT_HEADER_BYTES, CbtHeader } from "../engine/cbt_map.ts";
import { type Tracker, WriteGate } from "../engine/tracker.ts";
import type { FastPath, FastPathView } from "../nbd/worker/fast_path.ts";
import { gateOpen, identityView, reopenable } from "./fast_path_views.ts";

/** The fast path of `tracker`'s device while `attached()` says it is still attached. */
export function deviceFastPath(tracker: Tracker, attached: () => boolean): FastPath {
  const gate = tracker.gate;
  return {
    async view(): Promise<FastPathView | undefined> {
      await gateOpen(gate);
      const store = tracker.store;
      if (!attached() || !reopenable(store)) return undefined;
      const cbt = tracker.cbt;
      const area = tracker.diffArea;
      return {
        epoch: Atomics.load(gate, WriteGate.FREEZES),
        path: store.name,
        identity: identityView(store),
        gate: gate.buffer as SharedArrayBuffer,
        marks: {
          buffer: cbt.buffer,
          activeSlot: CbtHeader.ACTIVE,
          corruptedSlot: CbtHeader.CORRUPTED,
          tableOffset: CBT_HEADER_BYTES + cbt.blockCount,
          blockCount: cbt.blockCount,
          blockShift: cbt.blockShift,
          local: tracker.writeIntent === undefined,
        },
        prepare: area && {
          buffer: area.table.buffer,
          statesOffset: area.table.states.byteOffset,
          count: area.table.count,
          shift: area.table.shift,
        },
      };
    },
    async prepareWrite(offset: number, length: number): Promise<void> {
      if (!tracker.cbt.isCorrupted) tracker.cbt.mark(offset, length);
      await tracker.marksDurable();
      const area = tracker.diffArea;
      if (area !== undefined && area.needsCopy(offset, length)) {
        await area.copyOnWrite(offset, length);
      }
    },
  };
}
