/**
 * Copy-on-write through BlockStore.copyTo (the original copies a chunk
 * straight into the difference storage, NEW -> STORED): the path itself, its
 * ordering against the write and image reads, its refusal (falling back to
 * load and store) and faults during the copy.
 */

import assert from "node:assert/strict";
import type { SnapshotEvent } from "../../src/driver.ts";
import { isServiceError } from "../../src/errors.ts";
import { ChunkState } from "../../src/engine/chunk.ts";
import { CopyingStore } from "../_helpers/copying_store.ts";
import { gate, ioError } from "../_helpers/faulty_store.ts";
import { CHUNK, filled, type Fixture, setupEngine, sleep } from "../_helpers/engine_fixture.ts";

async function readImage(fx: Fixture, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await fx.snapshot.image("d0").read(offset, out);
  return out;
}

function copier(fx: Fixture, index = 0): CopyingStore {
  return fx.devices[index].store as CopyingStore;
}

async function events(fx: Fixture): Promise<SnapshotEvent[]> {
  const page = await fx.snapshot.waitEvents({ timeoutMs: 0 });
  return page.events.map(({ id: _, ...event }) => event as SnapshotEvent);
}

const corrupted = (e: unknown) => isServiceError(e, "SNAPSHOT_CORRUPTED") && e.errno === "EIO";

Deno.test("kernel copy: a first write stores the chunk at once, with no buffer and no queue", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK], kernelCopy: true });
  const { tracker, memory } = fx.devices[0];
  const area = fx.snapshot.diffArea("d0")!;
  await tracker.write(CHUNK + 100, filled(200, 0xaa));
  assert.equal(fx.snapshot.image("d0").chunkState(CHUNK).state, ChunkState.STORED);
  assert.equal(copier(fx).copyCounts.copies, 1);
  assert.equal(copier(fx).counts.reads, 0, "nothing read through a buffer");
  assert.deepEqual(
    { queued: area.counters().queued, allocated: area.counters().allocatedBuffers },
    { queued: 0, allocated: 0 },
  );
  assert.equal(fx.engine.stats.cowCopies, 1);
  assert.equal(fx.engine.stats.chunksStored, 1);
  assert.equal(fx.snapshot.storageInfo().filledSectors, CHUNK / 512);
  assert.deepEqual(memory.snapshotBytes(CHUNK + 100, 200), filled(200, 0xaa));
  assert.deepEqual(await readImage(fx, 0, 8 * CHUNK), filled(8 * CHUNK, 1));
  await tracker.write(CHUNK, filled(10, 0xbb));
  assert.equal(copier(fx).copyCounts.copies, 1, "a stored chunk is not copied again");
  await fx.close();
});

Deno.test("kernel copy: the write waits for the copy; image reads meanwhile see the data at take", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK], kernelCopy: true });
  const { tracker, memory } = fx.devices[0];
  const held = gate();
  copier(fx).copyGate = held.promise;
  let done = false;
  const writing = tracker.write(0, filled(CHUNK, 9)).then(() => (done = true));
  await sleep(5);
  assert.equal(done, false);
  assert.deepEqual(memory.snapshotBytes(0, 4), filled(4, 1), "not written before the copy");
  assert.equal(fx.snapshot.image("d0").chunkState(0).state, ChunkState.NEW);
  assert.deepEqual(await readImage(fx, 0, 2 * CHUNK), filled(2 * CHUNK, 1));
  copier(fx).copyGate = undefined;
  held.open();
  await writing;
  assert.deepEqual(memory.snapshotBytes(0, CHUNK), filled(CHUNK, 9));
  assert.deepEqual(await readImage(fx, 0, 4 * CHUNK), filled(4 * CHUNK, 1));
  await fx.close();
});

Deno.test("kernel copy: concurrent writers to one chunk copy it once; a wide write copies each chunk", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK], kernelCopy: true });
  const { tracker, memory } = fx.devices[0];
  const held = gate();
  copier(fx).copyGate = held.promise;
  const writes = Array.from(
    { length: 16 },
    (_, i) => tracker.write(CHUNK + i * 16, filled(16, 0x80 + i)),
  );
  await sleep(5);
  copier(fx).copyGate = undefined;
  held.open();
  await Promise.all(writes);
  assert.equal(copier(fx).copyCounts.copies, 1);
  for (let i = 0; i < 16; i++) assert.equal(memory.snapshotBytes(CHUNK + i * 16, 1)[0], 0x80 + i);
  await tracker.write(3 * CHUNK - 1, filled(2 * CHUNK + 2, 5));
  assert.equal(copier(fx).copyCounts.copies, 5, "chunks 2, 3, 4 and 5 copied");
  assert.equal(fx.snapshot.storageInfo().filledSectors, 5 * CHUNK / 512);
  assert.deepEqual(await readImage(fx, 0, 8 * CHUNK), filled(8 * CHUNK, 1));
  await fx.close();
});

Deno.test("kernel copy refused: the area loads and queues instead, and reuses the space it took", async () => {
  const fx = await setupEngine({
    sizes: [8 * CHUNK],
    kernelCopy: true,
    params: { chunkMaximumInQueue: 0 },
  });
  const { tracker, memory } = fx.devices[0];
  copier(fx).refuseCopy = true;
  const area = fx.snapshot.diffArea("d0")!;
  for (let i = 0; i < 4; i++) await tracker.write(i * CHUNK, filled(CHUNK, 0x40 + i));
  assert.equal(copier(fx).copyCounts.refused, 1, "asked once, then never again");
  assert.equal(copier(fx).copyCounts.copies, 1);
  assert.equal(copier(fx).counts.reads, 4, "each chunk loaded into a buffer");
  while (area.counters().storing) await sleep(1);
  assert.equal(fx.engine.stats.chunksStored, 4);
  assert.equal(fx.snapshot.storageInfo().filledSectors, 4 * CHUNK / 512, "no space lost");
  for (let i = 0; i < 4; i++) assert.equal(memory.snapshotBytes(i * CHUNK, 1)[0], 0x40 + i);
  assert.deepEqual(await readImage(fx, 0, 8 * CHUNK), filled(8 * CHUNK, 1));
  await fx.close();
});

Deno.test("kernel copy failing: the chunk is FAILED, the snapshot corrupted EIO, the write lands", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK], kernelCopy: true });
  const { tracker, memory } = fx.devices[0];
  copier(fx).failCopy = () => ioError();
  await tracker.write(CHUNK, filled(CHUNK, 9));
  assert.deepEqual(memory.snapshotBytes(CHUNK, CHUNK), filled(CHUNK, 9));
  assert.equal(fx.snapshot.deviceError("d0"), 5);
  assert.equal(fx.snapshot.image("d0").chunkState(CHUNK).state, ChunkState.FAILED);
  const [event] = await events(fx);
  assert.deepEqual(event, {
    code: "corrupted",
    timeMs: event.timeMs,
    deviceId: "d0",
    errorCode: 5,
    errorName: "EIO",
  });
  copier(fx).failCopy = undefined;
  await assert.rejects(readImage(fx, 0, 1), corrupted);
  await tracker.write(2 * CHUNK, filled(CHUNK, 7));
  assert.equal(copier(fx).copyCounts.copies, 1, "no copy-on-write once corrupted");
  assert.deepEqual(memory.snapshotBytes(2 * CHUNK, CHUNK), filled(CHUNK, 7));
  await fx.close();
});

Deno.test("kernel copy into a full file system: corrupted ENOSPC, the write lands", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK], kernelCopy: true });
  const { tracker, memory } = fx.devices[0];
  fx.storage.failWrite = () => Object.assign(new Error("no space"), { code: "ENOSPC" });
  await tracker.write(0, filled(CHUNK, 3));
  assert.deepEqual(memory.snapshotBytes(0, CHUNK), filled(CHUNK, 3));
  assert.equal(fx.snapshot.deviceError("d0"), 28);
  assert.equal(fx.snapshot.state, "corrupted");
  await fx.close();
});

Deno.test("kernel copy at the storage limit: no_space, then corrupted ENOSPC; the original keeps every write", async () => {
  const fx = await setupEngine({ sizes: [16 * CHUNK], kernelCopy: true, limitSectors: 64 });
  const { tracker, memory } = fx.devices[0];
  const expected = filled(16 * CHUNK, 1);
  for (let i = 0; i < 12; i++) {
    await tracker.write(i * CHUNK, filled(CHUNK, 0x20 + i));
    expected.set(filled(CHUNK, 0x20 + i), i * CHUNK);
  }
  assert.deepEqual(memory.snapshotBytes(), expected);
  assert.equal(fx.snapshot.deviceError("d0"), 28);
  assert.equal(fx.snapshot.storageInfo().filledSectors, 64, "filled exactly to the limit");
  assert.equal(copier(fx).copyCounts.copies, 8, "eight chunks fit in 64 sectors");
  assert.deepEqual((await events(fx)).map((e) => e.code), ["no_space", "corrupted"]);
  await fx.close();
});

Deno.test("kernel copy: destroy while a copy is in flight waits for it; nothing fails", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK], kernelCopy: true });
  const { tracker, memory } = fx.devices[0];
  const held = gate();
  copier(fx).copyGate = held.promise;
  const writing = tracker.write(0, filled(CHUNK, 6));
  await sleep(2);
  const destroying = fx.snapshot.destroy();
  await sleep(2);
  copier(fx).copyGate = undefined;
  held.open();
  await writing;
  await destroying;
  assert.deepEqual(memory.snapshotBytes(0, CHUNK), filled(CHUNK, 6));
  assert.equal(fx.storage.usedAfterClose, 0);
  assert.equal(copier(fx).usedAfterClose, 0);
  await fx.close();
});
