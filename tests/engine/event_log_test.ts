import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { EventQueue } from "../../src/engine/event_log.ts";

Deno.test("EventQueue.wait() resolves undefined after the timeout without an event", async () => {
  const queue = new EventQueue();
  const started = performance.now();
  assert.equal(await queue.wait(30), undefined);
  assert.ok(performance.now() - started >= 25);
  assert.equal(await queue.wait(0), undefined);
});

Deno.test("EventQueue delivers queued events once, in order", async () => {
  const queue = new EventQueue();
  queue.push({ code: "no_space", timeMs: 1, requestedSectors: 64 });
  queue.push({ code: "corrupted", timeMs: 2, errorCode: 28, errorName: "ENOSPC" });
  assert.equal(queue.pending, 2);
  assert.deepEqual(await queue.wait(0), { code: "no_space", timeMs: 1, requestedSectors: 64 });
  assert.equal((await queue.wait(10))?.code, "corrupted");
  assert.equal(await queue.wait(0), undefined);
});

Deno.test("EventQueue hands a pushed event to the oldest waiter", async () => {
  const queue = new EventQueue();
  const first = queue.wait(10_000);
  const second = queue.wait(10_000);
  queue.push({ code: "no_space", timeMs: 1, requestedSectors: 1 });
  queue.push({ code: "no_space", timeMs: 2, requestedSectors: 2 });
  assert.equal((await first)?.timeMs, 1);
  assert.equal((await second)?.timeMs, 2);
});

Deno.test("EventQueue.close() resolves pending waiters with undefined", async () => {
  const queue = new EventQueue();
  const waiting = queue.wait(10_000);
  queue.close();
  assert.equal(await waiting, undefined);
  queue.push({ code: "no_space", timeMs: 1, requestedSectors: 1 });
  assert.equal(await queue.wait(10), undefined);
});

Deno.test("EventQueue.wait() rejects a negative timeout", async () => {
  await assert.rejects(new EventQueue().wait(-1), (e) => isServiceError(e, "INVALID_ARGUMENT"));
});
