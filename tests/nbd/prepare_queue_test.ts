/**
 * The write preparations a Worker asks of the owner without waiting
 * (src/nbd/worker/prepare_queue.ts): both ends in one thread, the owner's
 * preparations settling out of order, failing, and the queue running full.
 */

import assert from "node:assert/strict";
import {
  newPrepareQueue,
  PREPARE_ENTRIES,
  PrepareClient,
  preparesInFlight,
  servePrepareQueue,
  wakePrepareQueue,
} from "../../src/nbd/worker/prepare_queue.ts";

/** A served queue whose preparations wait until `release` lets them go (by offset). */
function servedQueue(fail: (offset: number) => boolean = () => false) {
  const buffer = newPrepareQueue();
  const asked: { handle: number; offset: number; length: number }[] = [];
  const holds = new Map<number, () => void>();
  let finished = 0;
  let stopped = false;
  // Atomics.waitAsync alone does not keep the event loop alive (the server has its sockets).
  const alive = setInterval(() => {}, 50);
  const serving = servePrepareQueue(
    buffer,
    (handle, offset, length) => {
      asked.push({ handle, offset, length });
      return new Promise<void>((resolve, reject) =>
        holds.set(offset, () => (fail(offset) ? reject(new Error("no space")) : resolve()))
      );
    },
    () => finished++,
    () => stopped,
  );
  return {
    buffer,
    client: new PrepareClient(buffer),
    asked,
    release(offset: number) {
      holds.get(offset)!();
    },
    get finished() {
      return finished;
    },
    async stop() {
      stopped = true;
      wakePrepareQueue(buffer);
      await serving;
      clearInterval(alive);
    },
  };
}

const until = async (done: () => boolean) => {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 2));
  assert.ok(done(), "timed out");
};

Deno.test("prepare queue: preparations run at once, settle in any order, and free their entries", async () => {
  const queue = servedQueue();
  try {
    const settled: number[] = [];
    const asks = [0, 1, 2, 3].map((i) =>
      queue.client.ask(7, i * 262_144, 262_144)!.then((ok) => {
        assert.equal(ok, true);
        settled.push(i);
      })
    );
    await until(() => queue.asked.length === 4);
    assert.deepEqual(queue.asked[2], { handle: 7, offset: 524_288, length: 262_144 });
    assert.equal(preparesInFlight(queue.buffer), true);
    for (const i of [2, 0, 3, 1]) {
      queue.release(i * 262_144);
      await until(() => settled.includes(i));
    }
    await Promise.all(asks);
    assert.deepEqual(settled, [2, 0, 3, 1]);
    assert.equal(queue.finished, 4);
    assert.equal(queue.client.pending, 0);
    assert.equal(preparesInFlight(queue.buffer), false);
  } finally {
    await queue.stop();
  }
});

Deno.test("prepare queue: a failed preparation settles false; a full queue refuses the next ask", async () => {
  const queue = servedQueue((offset) => offset === 0);
  try {
    const failed = queue.client.ask(1, 0, 4096)!;
    const rest = Array.from(
      { length: PREPARE_ENTRIES - 1 },
      (_, i) => queue.client.ask(1, (i + 1) * 4096, 4096)!,
    );
    assert.equal(queue.client.ask(1, 1 << 30, 4096), undefined, "65th ask while 64 are in flight");
    await until(() => queue.asked.length === PREPARE_ENTRIES);
    queue.release(0);
    assert.equal(await failed, false);
    // One entry is free again.
    const again = queue.client.ask(1, 1 << 30, 4096);
    assert.ok(again !== undefined);
    await until(() => queue.asked.length === PREPARE_ENTRIES + 1);
    for (const { offset } of queue.asked.slice(1)) queue.release(offset);
    assert.deepEqual(new Set(await Promise.all([...rest, again])), new Set([true]));
    assert.equal(preparesInFlight(queue.buffer), false);
  } finally {
    await queue.stop();
  }
});
