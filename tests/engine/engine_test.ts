import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { Engine } from "../../src/engine/engine.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { FaultyStore } from "../_helpers/faulty_store.ts";
import { CHUNK, SMALL_PARAMS } from "../_helpers/engine_fixture.ts";

const code = (name: string) => (error: unknown) => isServiceError(error, name as "CONFLICT");

Deno.test("Engine resolves its parameters and rejects bad ones", () => {
  assert.equal(new Engine().params.chunkMinimumShift, 18);
  assert.equal(new Engine({ params: { chunkMinimumShift: 12 } }).params.chunkMinimumShift, 12);
  assert.throws(() => new Engine({ params: { chunkMinimumShift: 3 } }), code("INVALID_ARGUMENT"));
});

Deno.test("Engine.attach() refuses a taken name or a store attached already", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const store = new MemoryStore({ capacityBytes: 4 * CHUNK });
  const tracker = await engine.attach("a", store);
  assert.equal(tracker.capacityBytes, 4 * CHUNK);
  assert.equal(tracker.cbt.blockCount, 4);
  await assert.rejects(engine.attach("a", new MemoryStore({ capacityBytes: 1 })), code("CONFLICT"));
  await assert.rejects(engine.attach("b", store), code("CONFLICT"));
  await assert.rejects(
    engine.attach(
      "c",
      new FaultyStore(new MemoryStore({ capacityBytes: 1 }), { identity: store.identity }),
    ),
    code("CONFLICT"),
  );
  await assert.rejects(engine.attach("", store), code("INVALID_ARGUMENT"));
  assert.deepEqual(engine.trackers().map((t) => t.name), ["a"]);
  await engine.close();
});

Deno.test("Engine.detach() forgets a device; NOT_FOUND when unknown, CONFLICT in a snapshot", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  await engine.attach("a", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  await engine.attach("b", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  await engine.createSnapshot({
    storage: new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 }),
    limitSectors: 2048,
    trackers: ["b"],
  });
  await engine.detach("a");
  assert.throws(() => engine.tracker("a"), code("NOT_FOUND"));
  await assert.rejects(engine.detach("a"), code("NOT_FOUND"));
  await assert.rejects(engine.detach("b"), code("CONFLICT"));
  await engine.close();
});

Deno.test("Engine.createSnapshot() with an unknown device fails and closes the storage", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const storage = new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 });
  await assert.rejects(
    engine.createSnapshot({ storage, limitSectors: 2048, trackers: ["missing"] }),
    code("NOT_FOUND"),
  );
  assert.equal(storage.closed, true);
  assert.deepEqual(engine.snapshots(), []);
  await engine.close();
});

Deno.test("Engine.close() destroys snapshots and leaves device stores open", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const device = new MemoryStore({ capacityBytes: 4 * CHUNK });
  await engine.attach("a", device);
  const storage = new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 });
  const snapshot = await engine.createSnapshot({ storage, limitSectors: 2048, trackers: ["a"] });
  assert.equal(engine.snapshot(snapshot.id), snapshot);
  await snapshot.take();
  await engine.close();
  assert.equal(snapshot.state, "destroyed");
  assert.equal(storage.closed, true);
  assert.equal(device.closed, false);
  assert.deepEqual(engine.snapshots(), []);
  await assert.rejects(engine.attach("b", device), code("UNAVAILABLE"));
  await engine.close();
  await device.close();
});

Deno.test("Engine.stats count copies, stores, image I/O, events and takes", async () => {
  const engine = new Engine({ params: { ...SMALL_PARAMS, chunkMaximumInQueue: 0 } });
  const tracker = await engine.attach("a", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  const snapshot = await engine.createSnapshot({
    storage: new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 }),
    limitSectors: 2048,
    trackers: ["a"],
  });
  await snapshot.take();
  await tracker.write(0, new Uint8Array(2 * CHUNK));
  await snapshot.image("a").read(0, new Uint8Array(CHUNK));
  await new Promise((resolve) => setTimeout(resolve, 1));
  snapshot.diffArea("a")!.setCorrupted(5);
  assert.deepEqual(engine.stats, {
    originalWrites: 1,
    cowCopies: 2,
    chunksStored: 2,
    storeFailures: 0,
    imageReads: 1,
    imageWrites: 0,
    events: 1,
    storageGrows: 1,
    snapshotsTaken: 1,
  });
  await engine.close();
});
