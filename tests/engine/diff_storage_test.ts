import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { DiffStorage } from "../../src/engine/diff_storage.ts";
import type { EventInput } from "../../src/event_log.ts";
import { resolveEngineParams } from "../../src/engine/params.ts";
import { createEngineStats } from "../../src/engine/stats.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { FaultyStore, gate, ioError } from "../_helpers/faulty_store.ts";

const MINIMUM = 64; // sectors; half-full threshold 32
const params = resolveEngineParams({ diffStorageMinimumSectors: MINIMUM });
const CHUNK = 8; // sectors

function setup(store: MemoryStore | FaultyStore, limitSectors: number) {
  const events: EventInput[] = [];
  const stats = createEngineStats();
  const open = DiffStorage.open(store, {
    limitSectors,
    params,
    stats,
    emit: (event) => events.push(event),
  });
  return { open, events, stats };
}

function memory(sectors: number, maxSectors = 4096): MemoryStore {
  return new MemoryStore({ capacityBytes: sectors * 512, maxBytes: maxSectors * 512 });
}

Deno.test("DiffStorage grows an empty store at once by min(minimum, limit)", async () => {
  for (const [limit, expected] of [[1000, MINIMUM], [40, 40]]) {
    const store = memory(0);
    const { open, stats } = setup(store, limit);
    const storage = await open;
    assert.equal(store.capacityBytes, expected * 512);
    assert.deepEqual(storage.counters(), {
      capacitySectors: expected,
      limitSectors: limit,
      filledSectors: 0,
      requestedSectors: expected,
      overflowed: false,
    });
    assert.equal(stats.storageGrows, 1);
    await storage.close();
    assert.equal(store.closed, true);
  }
});

Deno.test("DiffStorage accepts a small store exactly at its limit without growing it", async () => {
  const store = new FaultyStore(memory(20));
  const storage = await setup(store, 20).open;
  assert.equal(storage.counters().requestedSectors, 20);
  assert.equal(store.counts.grows, 0);
  await storage.close();
});

Deno.test("DiffStorage uses a store larger than its limit only up to the limit, small or large", async () => {
  for (const [sectors, limit] of [[20, 10], [100, 50]]) {
    const store = new FaultyStore(memory(sectors));
    const storage = await setup(store, limit).open;
    assert.equal(storage.counters().capacitySectors, limit);
    assert.equal(storage.counters().requestedSectors, limit);
    assert.equal(store.counts.grows, 0);
    let handedOut = 0;
    assert.throws(() => {
      for (;;) {
        storage.allocate(CHUNK);
        handedOut += CHUNK;
      }
    }, (e) => isServiceError(e, "STORAGE_EXHAUSTED"));
    assert.ok(handedOut <= limit, `${handedOut} sectors handed out, limit ${limit}`);
    await storage.close();
  }
});

Deno.test("DiffStorage rejects an invalid limit", async () => {
  const store = memory(0);
  await assert.rejects(setup(store, -1).open, (e) => isServiceError(e, "INVALID_ARGUMENT"));
  await store.close();
});

Deno.test("DiffStorage on a block device never grows; low space raises no_space", async () => {
  const store = new FaultyStore(memory(48), { identity: { kind: "block", device: 77, inode: 0 } });
  const { open, events } = setup(store, 1000);
  const storage = await open;
  assert.equal(storage.counters().capacitySectors, 48);
  storage.allocate(CHUNK); // 40 left
  assert.equal(events.length, 0);
  storage.allocate(CHUNK); // 32 left: half-full
  assert.deepEqual(events, [{ code: "no_space", requestedSectors: MINIMUM }]);
  for (let i = 0; i < 4; i++) storage.allocate(CHUNK);
  assert.throws(() => storage.allocate(CHUNK), (e) => isServiceError(e, "STORAGE_EXHAUSTED"));
  assert.equal(store.counts.grows, 0);
  await storage.close();
});

Deno.test("DiffStorage grows by min(minimum, limit - capacity) each time half is left, up to the limit", async () => {
  const store = new FaultyStore(memory(0));
  const grows: number[] = [];
  store.failGrow = (bytes) => {
    grows.push(bytes / 512);
    return undefined;
  };
  const { open, events } = setup(store, 200);
  const storage = await open;
  const offsets: number[] = [];
  const eventsAt: number[] = [];
  for (let i = 0; i < 25; i++) {
    const offset = storage.allocate(CHUNK);
    offsets.push(offset);
    if (events.length > eventsAt.length) eventsAt.push(storage.counters().filledSectors);
    await storage.ensureWritable(offset + CHUNK * 512);
    await new Promise((resolve) => setTimeout(resolve, 0)); // let a background grow finish
  }
  assert.deepEqual(offsets, Array.from({ length: 25 }, (_, i) => i * CHUNK * 512), "append-only");
  // 64 at open; at 32 filled +64; at 96 filled +64; at 160 filled +min(64, 8).
  assert.deepEqual(grows, [64, 128, 192, 200]);
  const counters = storage.counters();
  assert.equal(counters.capacitySectors, 200);
  assert.equal(counters.filledSectors, 200, "the allocation that exactly fills succeeds");
  assert.deepEqual(events, [{ code: "no_space", requestedSectors: MINIMUM }]);
  assert.deepEqual(eventsAt, [168], "no_space once half is left at the limit");
  assert.throws(
    () => storage.allocate(CHUNK),
    (e) => isServiceError(e, "STORAGE_EXHAUSTED") && e.errno === "ENOSPC",
  );
  assert.equal(storage.counters().overflowed, true);
  await storage.close();
});

Deno.test("DiffStorage overflow is sticky: after one failure every allocation fails", async () => {
  const storage = await setup(memory(0), 64).open;
  for (let i = 0; i < 8; i++) storage.allocate(CHUNK);
  assert.throws(() => storage.allocate(1));
  assert.throws(() => storage.allocate(0), (e) => isServiceError(e, "STORAGE_EXHAUSTED"));
  await storage.close();
});

Deno.test("DiffStorage.ensureWritable() waits for a pending grow", async () => {
  const store = new FaultyStore(memory(0));
  const storage = await setup(store, 1000).open;
  const held = gate();
  store.delay = () => held.promise;
  let offset = 0;
  for (let i = 0; i < 5; i++) offset = storage.allocate(CHUNK); // 40 filled, grow to 128 pending
  for (let i = 0; i < 5; i++) offset = storage.allocate(CHUNK); // up to 80, beyond capacity 64
  assert.equal(storage.counters().capacitySectors, 64);
  assert.equal(storage.counters().requestedSectors, 128);
  let ready = false;
  const waiting = storage.ensureWritable(offset + CHUNK * 512).then(() => (ready = true));
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(ready, false);
  held.open();
  await waiting;
  assert.equal(storage.counters().capacitySectors, 128);
  await storage.close();
});

Deno.test("DiffStorage after a failed grow keeps what it has and reports no_space", async () => {
  const store = new FaultyStore(memory(0));
  const { open, events } = setup(store, 1000);
  const storage = await open;
  store.failGrow = () => ioError("disk full");
  let last = 0;
  for (let i = 0; i < 5; i++) last = storage.allocate(CHUNK); // grow to 128 starts and fails
  await assert.rejects(
    storage.ensureWritable(last + 5 * CHUNK * 512),
    (e) => isServiceError(e, "STORAGE_EXHAUSTED"),
  );
  assert.deepEqual(events, [{ code: "no_space", requestedSectors: 64 }]);
  assert.equal(storage.counters().requestedSectors, 64);
  for (let i = 0; i < 3; i++) storage.allocate(CHUNK); // up to 64
  assert.throws(() => storage.allocate(CHUNK), (e) => isServiceError(e, "STORAGE_EXHAUSTED"));
  await storage.close();
});

Deno.test("DiffStorage.open() fails with STORAGE_EXHAUSTED when the first grow fails", async () => {
  const store = memory(0, 16);
  await assert.rejects(setup(store, 1000).open, (e) => isServiceError(e, "STORAGE_EXHAUSTED"));
  await store.close();
});

Deno.test("DiffStorage.allocateAfterGrowth: concurrent allocations past the pending step wait and fit", async () => {
  const store = new FaultyStore(memory(0));
  const { open, events } = setup(store, 1000);
  const storage = await open; // 64 sectors: 8 chunks
  const held = gate();
  store.delay = () => held.promise; // growth stays pending until opened
  const offsets = Array.from({ length: 30 }, () => storage.allocateAfterGrowth(CHUNK));
  await new Promise((resolve) => setTimeout(resolve, 5));
  store.delay = undefined;
  held.open();
  const got = await Promise.all(offsets);
  assert.deepEqual(
    [...got].sort((a, b) => a - b),
    Array.from({ length: 30 }, (_, i) => i * CHUNK * 512),
  );
  assert.equal(storage.counters().overflowed, false);
  assert.ok(storage.counters().capacitySectors >= 30 * CHUNK);
  assert.deepEqual(events, []);
  // Plain allocate() does not wait: past what is requested it overflows.
  const { open: open2 } = setup(memory(0), 1000);
  const plain = await open2;
  assert.throws(() => {
    for (let i = 0; i < 30; i++) plain.allocate(CHUNK);
  }, (e) => isServiceError(e, "STORAGE_EXHAUSTED"));
});

Deno.test("DiffStorage.allocateAfterGrowth fails with STORAGE_EXHAUSTED at the limit", async () => {
  const { open, events } = setup(memory(0), 80);
  const storage = await open;
  const results = await Promise.allSettled(
    Array.from({ length: 12 }, () => storage.allocateAfterGrowth(CHUNK)),
  );
  assert.equal(results.filter((r) => r.status === "fulfilled").length, 10, "80 sectors: 10 chunks");
  for (const r of results.filter((r) => r.status === "rejected")) {
    assert.ok(isServiceError((r as PromiseRejectedResult).reason, "STORAGE_EXHAUSTED"));
  }
  assert.equal(storage.counters().overflowed, true);
  assert.deepEqual(events.map((e) => e.code), ["no_space"]);
});
