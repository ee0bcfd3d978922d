/**
 * Holds the writer lock of a gate for writer_lock_test.ts: takes it, posts
 * "held", keeps it `holdMs`, then releases it (or never, with `release`
 * false) and posts "released".
 */

import { lockWriter, unlockWriter } from "../../../src/nbd/worker/writer_lock.ts";

interface HolderJob {
  gate: SharedArrayBuffer;
  holdMs: number;
  release: boolean;
}

self.onmessage = (event: MessageEvent<HolderJob>) => {
  const gate = new Int32Array(event.data.gate);
  lockWriter(gate);
  self.postMessage("held");
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, event.data.holdMs);
  if (event.data.release) unlockWriter(gate);
  self.postMessage("released");
};
