import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { Engine } from "../../src/engine/engine.ts";
import { WRITE_SLICE_BYTES } from "../../src/engine/tracker.ts";
import { setImmediate } from "node:timers";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { FaultyStore, ioError } from "../_helpers/faulty_store.ts";
import { CHUNK, filled, setupEngine, sleep, SMALL_PARAMS } from "../_helpers/engine_fixture.ts";

Deno.test("Tracker.write() marks the CBT write table with the active number; reads do not", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const tracker = await engine.attach("a", new MemoryStore({ capacityBytes: 8 * CHUNK }));
  await tracker.write(CHUNK + 1, filled(CHUNK, 1));
  await tracker.read(6 * CHUNK, new Uint8Array(CHUNK));
  tracker.cbt.switch();
  assert.deepEqual([...tracker.cbt.read(0, 8)], [0, 1, 1, 0, 0, 0, 0, 0]);
  await engine.close();
});

Deno.test("Tracker.writeZeroes() writes zeros in pieces with the write semantics", async () => {
  const size = 3 * 1024 * 1024;
  const fx = await setupEngine({
    sizes: [size],
    params: { chunkMinimumShift: 16, diffStorageMinimumSectors: 2048 },
    limitSectors: 8192,
    storageMaxBytes: 4 << 20,
  });
  const { tracker, memory } = fx.devices[0];
  await tracker.writeZeroes(100, size - 200);
  const after = memory.snapshotBytes();
  assert.equal(after[99], 1);
  assert.ok(after.subarray(100, size - 100).every((b) => b === 0));
  assert.equal(after[size - 100], 1);
  const image = new Uint8Array(size);
  await fx.snapshot.image("d0").read(0, image);
  assert.ok(image.every((b) => b === 1), "copied before zeroing");
  assert.equal(fx.devices[0].store.counts.writes, 3, "written in 1 MiB pieces");
  await fx.close();
});

Deno.test("Tracker refuses I/O past the capacity with OUT_OF_RANGE and marks nothing", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const tracker = await engine.attach("a", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  const outOfRange = (e: unknown) => isServiceError(e, "OUT_OF_RANGE");
  await assert.rejects(tracker.write(4 * CHUNK - 1, filled(2, 1)), outOfRange);
  await assert.rejects(tracker.writeZeroes(-1, 1), outOfRange);
  await assert.rejects(tracker.read(4 * CHUNK, new Uint8Array(1)), outOfRange);
  await assert.rejects(tracker.write(1.5, filled(1, 1)), outOfRange);
  tracker.cbt.switch();
  assert.deepEqual([...tracker.cbt.read(0, 4)], [0, 0, 0, 0]);
  await engine.close();
});

Deno.test("Tracker turns store failures into IO ServiceErrors", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const store = new FaultyStore(new MemoryStore({ capacityBytes: 4 * CHUNK }));
  const tracker = await engine.attach("a", store);
  store.failWrite = () => ioError();
  store.failRead = () => ioError();
  await assert.rejects(tracker.write(0, filled(1, 1)), (e) => isServiceError(e, "IO"));
  await assert.rejects(tracker.read(0, new Uint8Array(1)), (e) => isServiceError(e, "IO"));
  await engine.close();
});

Deno.test("Tracker freeze gate: new writes wait, freeze waits for writes in flight", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const store = new FaultyStore(new MemoryStore({ capacityBytes: 4 * CHUNK }));
  const tracker = await engine.attach("a", store);
  let release!: () => void;
  store.writeGate = new Promise((resolve) => (release = resolve));
  const inFlight = tracker.write(0, filled(1, 1));
  await sleep(1);
  let frozen = false;
  const freezing = tracker.freeze().then(() => (frozen = true));
  await sleep(2);
  assert.equal(frozen, false, "freeze waits for the write in flight");
  store.writeGate = undefined;
  release();
  await inFlight;
  await freezing;
  let late = false;
  const waiting = tracker.write(CHUNK, filled(1, 2)).then(() => (late = true));
  await sleep(2);
  assert.equal(late, false, "a write waits at the gate while frozen");
  tracker.unfreeze();
  await waiting;
  assert.equal(late, true);
  await engine.close();
});

Deno.test("a write beyond the CBT map (device grew) corrupts the map; the next take resets it", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const memory = new MemoryStore({ capacityBytes: 4 * CHUNK, maxBytes: 8 * CHUNK });
  const tracker = await engine.attach("a", memory);
  const generation = tracker.cbt.generationId;
  await memory.grow(8 * CHUNK);
  await tracker.write(6 * CHUNK, filled(CHUNK, 9));
  assert.equal(tracker.cbt.isCorrupted, true);
  assert.equal(memory.snapshotBytes(6 * CHUNK, 1)[0], 9, "the write still landed");
  const storage = new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 });
  const snapshot = await engine.createSnapshot({ storage, limitSectors: 2048, trackers: ["a"] });
  await snapshot.take();
  assert.equal(tracker.cbt.isCorrupted, false);
  assert.equal(tracker.cbt.capacityBytes, 8 * CHUNK);
  assert.equal(tracker.cbt.blockCount, 8);
  assert.notEqual(tracker.cbt.generationId, generation);
  assert.equal(tracker.cbt.previousNumber, 1, "reset then switched");
  assert.equal(snapshot.image("a").sizeBytes, 8 * CHUNK);
  await engine.close();
});

Deno.test("a resized device resets its CBT map at take even without a marking error", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const memory = new MemoryStore({ capacityBytes: 4 * CHUNK, maxBytes: 8 * CHUNK });
  const tracker = await engine.attach("a", memory);
  await tracker.write(0, filled(1, 1));
  const generation = tracker.cbt.generationId;
  await memory.grow(6 * CHUNK);
  const storage = new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 });
  const snapshot = await engine.createSnapshot({ storage, limitSectors: 2048, trackers: ["a"] });
  await snapshot.take();
  assert.notEqual(tracker.cbt.generationId, generation);
  assert.equal(tracker.cbt.blockCount, 6);
  assert.deepEqual([...tracker.cbt.read(0, 6)], [0, 0, 0, 0, 0, 0], "history dropped");
  await engine.close();
});

Deno.test("once the difference area is corrupted, writes skip copy-on-write and still land", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK] });
  const { tracker, store, memory } = fx.devices[0];
  fx.snapshot.diffArea("d0")!.setCorrupted(5);
  const reads = store.counts.reads;
  await tracker.write(0, filled(2 * CHUNK, 4));
  assert.equal(store.counts.reads, reads, "no chunk loaded");
  assert.equal(fx.engine.stats.cowCopies, 0);
  assert.deepEqual(memory.snapshotBytes(0, 2 * CHUNK), filled(2 * CHUNK, 4));
  tracker.cbt.switch();
  assert.deepEqual([...tracker.cbt.read(0, 3)], [2, 2, 0], "CBT still marked");
  await fx.close();
});

Deno.test("a write larger than a slice lets timers run between its slices", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const size = 4 * WRITE_SLICE_BYTES;
  const memory = new MemoryStore({ capacityBytes: size });
  const store = new FaultyStore(memory);
  const tracker = await engine.attach("a", store);
  let timerRan = false;
  setImmediate(() => (timerRan = true));
  let timerBeforeLastSlice = false;
  store.failWrite = () => {
    if (store.counts.writes === 4) timerBeforeLastSlice = timerRan;
    return undefined;
  };
  await tracker.write(0, filled(size, 7));
  assert.equal(store.counts.writes, 4, "four slices");
  assert.equal(timerBeforeLastSlice, true, "the event loop turned during the write");
  assert.equal(memory.snapshotBytes(size - 1, 1)[0], 7);
  await engine.close();
});
