import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { ChunkState } from "../../src/engine/chunk.ts";
import { gate } from "../_helpers/faulty_store.ts";
import { CHUNK, filled, setupEngine, sleep } from "../_helpers/engine_fixture.ts";

async function readImage(
  image: { read(o: number, b: Uint8Array): Promise<void> },
  o: number,
  n: number,
) {
  const out = new Uint8Array(n);
  await image.read(o, out);
  return out;
}

Deno.test("copy-on-write: a write after take copies the chunk's original data first", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK] });
  const { tracker, memory } = fx.devices[0];
  const image = fx.snapshot.image("d0");
  await tracker.write(CHUNK + 100, filled(200, 0xaa));
  assert.deepEqual(await readImage(image, 0, 8 * CHUNK), filled(8 * CHUNK, 1));
  assert.deepEqual(memory.snapshotBytes(CHUNK + 100, 200), filled(200, 0xaa));
  assert.equal(image.chunkState(CHUNK).state, ChunkState.IN_MEMORY);
  assert.equal(image.chunkState(0).state, ChunkState.NEW);
  assert.equal(fx.engine.stats.cowCopies, 1);
  await tracker.write(CHUNK, filled(10, 0xbb));
  assert.equal(fx.engine.stats.cowCopies, 1, "a copied chunk is not copied again");
  await fx.close();
});

Deno.test("copy-on-write: the write waits for the load of the original data", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const { tracker, store, memory } = fx.devices[0];
  const held = gate();
  store.readGate = held.promise;
  let done = false;
  const writing = tracker.write(0, filled(CHUNK, 9)).then(() => (done = true));
  await sleep(10);
  assert.equal(done, false);
  assert.deepEqual(memory.snapshotBytes(0, 4), filled(4, 1), "not written before the load");
  store.readGate = undefined;
  held.open();
  await writing;
  assert.deepEqual(memory.snapshotBytes(0, 4), filled(4, 9));
  assert.deepEqual(await readImage(fx.snapshot.image("d0"), 0, CHUNK), filled(CHUNK, 1));
  await fx.close();
});

Deno.test("copy-on-write: the write never waits for the store to the difference storage", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK], params: { chunkMaximumInQueue: 0 } });
  const { tracker, memory } = fx.devices[0];
  const held = gate();
  fx.storage.writeGate = held.promise;
  for (let i = 0; i < 4; i++) await tracker.write(i * CHUNK, filled(CHUNK, 0x40 + i));
  assert.equal(fx.engine.stats.chunksStored, 0, "the store worker is still blocked");
  assert.equal(fx.snapshot.diffArea("d0")!.counters().storing, true);
  for (let i = 0; i < 4; i++) assert.equal(memory.snapshotBytes(i * CHUNK, 1)[0], 0x40 + i);
  fx.storage.writeGate = undefined;
  held.open();
  while (fx.snapshot.diffArea("d0")!.counters().storing) await sleep(1);
  assert.equal(fx.engine.stats.chunksStored, 4);
  assert.deepEqual(await readImage(fx.snapshot.image("d0"), 0, 8 * CHUNK), filled(8 * CHUNK, 1));
  await fx.close();
});

Deno.test("store queue: chunks stay in memory until the queue exceeds its maximum, then drain", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK] }); // queue maximum 2
  const { tracker } = fx.devices[0];
  const image = fx.snapshot.image("d0");
  const area = fx.snapshot.diffArea("d0")!;
  await tracker.write(0, filled(1, 7));
  await tracker.write(CHUNK, filled(1, 7));
  assert.equal(area.counters().queued, 2);
  assert.equal(fx.engine.stats.chunksStored, 0);
  assert.equal(image.chunkState(0).state, ChunkState.IN_MEMORY);
  await tracker.write(2 * CHUNK, filled(1, 7));
  while (area.counters().storing) await sleep(1);
  assert.equal(area.counters().queued, 0);
  assert.equal(fx.engine.stats.chunksStored, 3);
  for (let i = 0; i < 3; i++) assert.equal(image.chunkState(i * CHUNK).state, ChunkState.STORED);
  assert.equal(fx.snapshot.storageInfo().filledSectors, 3 * CHUNK / 512);
  assert.deepEqual(await readImage(image, 0, 8 * CHUNK), filled(8 * CHUNK, 1));
  await fx.close();
});

Deno.test("copy-on-write: concurrent writers to the same chunk copy it once", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const { tracker, store, memory } = fx.devices[0];
  const held = gate();
  store.readGate = held.promise;
  const writes = Array.from(
    { length: 16 },
    (_, i) => tracker.write(CHUNK + i * 16, filled(16, 0x80 + i)),
  );
  await sleep(5);
  store.readGate = undefined;
  held.open();
  await Promise.all(writes);
  assert.equal(fx.engine.stats.cowCopies, 1);
  assert.equal(store.counts.reads, 1, "one load of the chunk");
  for (let i = 0; i < 16; i++) assert.equal(memory.snapshotBytes(CHUNK + i * 16, 1)[0], 0x80 + i);
  assert.deepEqual(await readImage(fx.snapshot.image("d0"), CHUNK, CHUNK), filled(CHUNK, 1));
  await fx.close();
});

Deno.test("copy-on-write: a write spanning several chunks copies each of them", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK], params: { chunkMaximumInQueue: 16 } });
  await fx.devices[0].tracker.write(CHUNK - 1, filled(2 * CHUNK + 2, 5));
  assert.equal(fx.engine.stats.cowCopies, 4);
  assert.deepEqual(await readImage(fx.snapshot.image("d0"), 0, 8 * CHUNK), filled(8 * CHUNK, 1));
  await fx.close();
});

Deno.test("the last chunk may be short; its storage space is a full chunk", async () => {
  const size = 3 * CHUNK + 1024;
  const fx = await setupEngine({ sizes: [size], params: { chunkMaximumInQueue: 0 } });
  const { tracker } = fx.devices[0];
  const image = fx.snapshot.image("d0");
  assert.equal(image.sizeBytes, size);
  assert.deepEqual(image.chunkState(3 * CHUNK + 5), {
    state: ChunkState.NEW,
    offsetBytes: 3 * CHUNK,
    lengthBytes: 1024,
  });
  await tracker.write(size - 10, filled(10, 0xee));
  while (fx.snapshot.diffArea("d0")!.counters().storing) await sleep(1);
  assert.equal(image.chunkState(size - 1).state, ChunkState.STORED);
  assert.equal(fx.snapshot.storageInfo().filledSectors, CHUNK / 512);
  assert.deepEqual(await readImage(image, 3 * CHUNK, 1024), filled(1024, 1));
  await assert.rejects(
    image.read(size - 10, new Uint8Array(11)),
    (e) => isServiceError(e, "OUT_OF_RANGE"),
  );
  await fx.close();
});

Deno.test("image reads come from the original, memory or storage by chunk state", async () => {
  const fx = await setupEngine({ sizes: [6 * CHUNK], params: { chunkMaximumInQueue: 2 } });
  const { tracker } = fx.devices[0];
  const image = fx.snapshot.image("d0");
  for (let i = 0; i < 3; i++) await tracker.write(i * CHUNK, filled(CHUNK, 0x10 + i)); // stores all 3
  while (fx.snapshot.diffArea("d0")!.counters().storing) await sleep(1);
  await tracker.write(3 * CHUNK, filled(CHUNK, 0x20)); // in memory
  const states = [0, 1, 2, 3, 4, 5].map((i) => image.chunkState(i * CHUNK).state);
  assert.deepEqual(states, ["STORED", "STORED", "STORED", "IN_MEMORY", "NEW", "NEW"]);
  const storageReads = fx.storage.counts.reads;
  assert.deepEqual(await readImage(image, 2 * CHUNK + 7, 2 * CHUNK), filled(2 * CHUNK, 1));
  assert.equal(fx.storage.counts.reads, storageReads + 1, "the STORED part came from storage");
  const originalReads = fx.devices[0].store.counts.reads;
  assert.deepEqual(await readImage(image, 4 * CHUNK, 2 * CHUNK), filled(2 * CHUNK, 1));
  assert.equal(
    fx.devices[0].store.counts.reads,
    originalReads + 1,
    "the run of NEW chunks came from the original in one read",
  );
  await fx.close();
});

Deno.test("image writes modify the chunk's copy in every state, never the original", async () => {
  const fx = await setupEngine({ sizes: [6 * CHUNK], writable: true });
  const { tracker, memory } = fx.devices[0];
  const image = fx.snapshot.image("d0");
  for (let i = 0; i < 3; i++) await tracker.write(i * CHUNK, filled(CHUNK, 0x10 + i)); // 0-2 stored
  while (fx.snapshot.diffArea("d0")!.counters().storing) await sleep(1);
  await tracker.write(3 * CHUNK, filled(CHUNK, 0x20)); // 3 in memory
  await image.write(CHUNK + 10, filled(20, 0xa1)); // STORED
  await image.write(3 * CHUNK + 10, filled(20, 0xa2)); // IN_MEMORY
  await image.write(5 * CHUNK + 10, filled(20, 0xa3)); // NEW
  assert.equal(image.chunkState(5 * CHUNK).state, ChunkState.IN_MEMORY);
  const expected = filled(6 * CHUNK, 1);
  expected.set(filled(20, 0xa1), CHUNK + 10);
  expected.set(filled(20, 0xa2), 3 * CHUNK + 10);
  expected.set(filled(20, 0xa3), 5 * CHUNK + 10);
  assert.deepEqual(await readImage(image, 0, 6 * CHUNK), expected);
  assert.deepEqual(memory.snapshotBytes(5 * CHUNK, CHUNK), filled(CHUNK, 1), "original unchanged");
  // A later write to the original does not copy over the image write.
  await tracker.write(5 * CHUNK, filled(CHUNK, 0x30));
  assert.deepEqual(await readImage(image, 0, 6 * CHUNK), expected);
  await fx.close();
});

Deno.test("an image read of a NEW chunk is never torn by a write to the original landing mid-read", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const { tracker, store, memory } = fx.devices[0];
  const held = gate();
  store.readGate = held.promise;
  const reading = readImage(fx.snapshot.image("d0"), 0, CHUNK);
  await sleep(2);
  let written = false;
  const writing = tracker.write(0, filled(CHUNK, 0x77)).then(() => (written = true));
  await sleep(5);
  assert.equal(written, false);
  assert.equal(memory.snapshotBytes(0, 1)[0], 1);
  store.readGate = undefined;
  held.open();
  assert.deepEqual(await reading, filled(CHUNK, 1));
  await writing;
  assert.equal(memory.snapshotBytes(0, 1)[0], 0x77);
  assert.deepEqual(await readImage(fx.snapshot.image("d0"), 0, CHUNK), filled(CHUNK, 1));
  await fx.close();
});

Deno.test("the buffer pool stays within its size while many chunks pass through", async () => {
  const fx = await setupEngine({ sizes: [64 * CHUNK] }); // pool 2, queue 2
  const { tracker } = fx.devices[0];
  const area = fx.snapshot.diffArea("d0")!;
  for (let i = 0; i < 64; i++) {
    await tracker.write(i * CHUNK, filled(CHUNK, 3));
    assert.ok(area.counters().freeBuffers <= 2);
  }
  while (area.counters().storing) await sleep(1);
  assert.ok(area.counters().freeBuffers <= 2);
  assert.ok(area.counters().allocatedBuffers < 64, "buffers are reused");
  assert.equal(fx.engine.stats.chunksStored, 64 - area.counters().queued);
  await fx.close();
});

Deno.test("image reads of untouched chunks do not accumulate chunk objects", async () => {
  const fx = await setupEngine({ sizes: [32 * CHUNK] });
  await readImage(fx.snapshot.image("d0"), 0, 32 * CHUNK);
  assert.equal(fx.snapshot.diffArea("d0")!.counters().chunks, 0);
  await fx.close();
});

Deno.test("a chunk copied while a NEW run is read from the original is read again from its copy", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const { tracker, store, memory } = fx.devices[0];
  let armed = true;
  store.delay = async () => {
    if (!armed) return;
    armed = false;
    // Lands between the image read's state check and its read of the original.
    await tracker.write(CHUNK, filled(CHUNK, 0x55));
  };
  const image = await readImage(fx.snapshot.image("d0"), 0, 4 * CHUNK);
  assert.equal(memory.snapshotBytes(CHUNK, 1)[0], 0x55, "the original changed mid-read");
  assert.equal(fx.snapshot.image("d0").chunkState(CHUNK).state, ChunkState.IN_MEMORY);
  assert.deepEqual(image, filled(4 * CHUNK, 1), "the image still reads as at take");
  assert.equal(
    fx.snapshot.diffArea("d0")!.counters().chunks,
    1,
    "only the copied chunk has an object",
  );
  await fx.close();
});
