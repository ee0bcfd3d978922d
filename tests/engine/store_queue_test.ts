import assert from "node:assert/strict";
import { Chunk } from "../../src/engine/chunk.ts";
import { StoreQueue } from "../../src/engine/store_queue.ts";

function chunks(count: number): Chunk[] {
  return Array.from({ length: count }, (_, i) => new Chunk(i, i * 4096, 4096));
}

function unexpected(error: unknown): void {
  throw error;
}

async function idle(queue: StoreQueue): Promise<void> {
  while (queue.running) await new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("StoreQueue asks for its worker only beyond the maximum, then drains everything", async () => {
  const stored: number[] = [];
  const queue = new StoreQueue(2, (chunk) => {
    assert.equal(chunk.lock.locked, true, "stored while locked");
    stored.push(chunk.index);
    return Promise.resolve();
  });
  const [a, b, c, d] = chunks(4);
  assert.equal(queue.push(a), false);
  assert.equal(queue.push(b), false);
  assert.equal(queue.push(c), true);
  assert.equal(queue.push(d), false, "the worker is already due");
  queue.start(unexpected);
  await idle(queue);
  assert.deepEqual(stored, [0, 1, 2, 3]);
  assert.equal(queue.length, 0);
  assert.equal(a.lock.locked, false);
  await queue.stop();
});

Deno.test("StoreQueue skips chunks it cannot lock and leaves them queued", async () => {
  const stored: number[] = [];
  const queue = new StoreQueue(0, (chunk) => {
    stored.push(chunk.index);
    return Promise.resolve();
  });
  const [a, b] = chunks(2);
  a.lock.tryLock();
  assert.equal(queue.push(a), true);
  queue.push(b);
  queue.start(unexpected);
  await idle(queue);
  assert.deepEqual(stored, [1]);
  assert.equal(queue.length, 1);
  a.lock.unlock();
  assert.equal(queue.push(chunks(3)[2]), true, "a later push starts a new worker");
  queue.start(unexpected);
  await idle(queue);
  assert.deepEqual(stored, [1, 0, 2]);
  await queue.stop();
});

Deno.test("StoreQueue.stop() ends the worker after its current chunk", async () => {
  let release!: () => void;
  const stored: number[] = [];
  const queue = new StoreQueue(0, async (chunk) => {
    if (chunk.index === 0) await new Promise<void>((resolve) => (release = resolve));
    stored.push(chunk.index);
  });
  for (const chunk of chunks(3)) if (queue.push(chunk)) queue.start(unexpected);
  await new Promise((resolve) => setTimeout(resolve, 0));
  const stopping = queue.stop();
  release();
  await stopping;
  assert.deepEqual(stored, [0]);
  assert.equal(queue.running, false);
  assert.equal(queue.push(chunks(1)[0]), false, "no worker after stop");
  assert.equal(queue.drop().length, 3);
});
