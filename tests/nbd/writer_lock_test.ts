/**
 * The Workers' writer lock (src/nbd/worker/writer_lock.ts) across two real
 * threads: a Worker holds it while this thread asks for it.
 */

import assert from "node:assert/strict";
import {
  lockWriter,
  unlockWriter,
  WRITER,
  WRITER_WAIT_MS,
} from "../../src/nbd/worker/writer_lock.ts";

/** Starts a Worker that takes the lock of `gate` and holds it `holdMs`; resolves once held. */
async function holder(
  gate: Int32Array<SharedArrayBuffer>,
  holdMs: number,
  release: boolean,
): Promise<{ released: Promise<void>; worker: Worker }> {
  const worker = new Worker(new URL("./_workers/writer_lock_holder.ts", import.meta.url), {
    type: "module",
  });
  const messages: string[] = [];
  let wake: (() => void) | undefined;
  worker.onmessage = (event) => {
    messages.push(event.data);
    wake?.();
  };
  const until = (message: string) =>
    new Promise<void>((resolve) => {
      const check = () => messages.includes(message) ? resolve() : (wake = check);
      check();
    });
  worker.postMessage({ gate: gate.buffer, holdMs, release });
  await until("held");
  return { released: until("released"), worker };
}

Deno.test("writer lock: free, it is taken and released at once", () => {
  const gate = new Int32Array(new SharedArrayBuffer(16));
  const asked = performance.now();
  lockWriter(gate);
  assert.ok(performance.now() - asked < 100);
  assert.equal(gate[WRITER], 1);
  unlockWriter(gate);
  assert.equal(gate[WRITER], 0);
});

Deno.test("writer lock: a second thread waits until the holder releases it", async () => {
  const gate = new Int32Array(new SharedArrayBuffer(16));
  const { released, worker } = await holder(gate, 150, true);
  try {
    const asked = performance.now();
    lockWriter(gate);
    const waited = performance.now() - asked;
    assert.ok(waited >= 100, `took the lock after ${waited.toFixed(0)} ms, while it was held`);
    assert.ok(
      waited < WRITER_WAIT_MS,
      `waited ${waited.toFixed(0)} ms: the release did not wake it`,
    );
    assert.notEqual(gate[WRITER], 0);
    unlockWriter(gate);
    assert.equal(gate[WRITER], 0);
    await released;
  } finally {
    worker.terminate();
  }
});

Deno.test("writer lock: a holder that never lets go costs one bounded wait, then it is taken over", async () => {
  const gate = new Int32Array(new SharedArrayBuffer(16));
  const { released, worker } = await holder(gate, 0, false);
  try {
    await released;
    assert.notEqual(gate[WRITER], 0, "the holder left it held");
    const asked = performance.now();
    lockWriter(gate);
    const waited = performance.now() - asked;
    assert.ok(waited >= WRITER_WAIT_MS - 5, `took it over after ${waited.toFixed(0)} ms`);
    assert.ok(waited < WRITER_WAIT_MS + 500, `took it over after ${waited.toFixed(0)} ms`);
    unlockWriter(gate);
    assert.equal(gate[WRITER], 0);
    const again = performance.now();
    lockWriter(gate);
    assert.ok(performance.now() - again < 100, "the next writer does not wait again");
    unlockWriter(gate);
  } finally {
    worker.terminate();
  }
});
