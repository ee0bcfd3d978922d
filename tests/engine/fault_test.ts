import assert from "node:assert/strict";
import { isServiceError, ServiceError } from "../../src/errors.ts";
import type { SnapshotEvent } from "../../src/driver.ts";
import { ioError } from "../_helpers/faulty_store.ts";
import { CHUNK, filled, type Fixture, setupEngine, sleep } from "../_helpers/engine_fixture.ts";
import { Prng } from "../_helpers/prng.ts";

async function drainEvents(fx: Fixture): Promise<SnapshotEvent[]> {
  const page = await fx.snapshot.waitEvents({ timeoutMs: 0 });
  return page.events.map(({ id: _, ...event }) => event as SnapshotEvent);
}

async function settle(fx: Fixture): Promise<void> {
  for (const device of fx.devices) {
    while (fx.snapshot.diffArea(device.tracker.name)?.counters().storing) await sleep(1);
  }
  await sleep(1);
}

const corrupted = (e: unknown) => isServiceError(e, "SNAPSHOT_CORRUPTED") && e.errno === "EIO";

Deno.test("storage reaching its limit: no_space, then corrupted ENOSPC; originals keep every write", async () => {
  let clock = 0;
  const fx = await setupEngine({
    sizes: [64 * CHUNK, 32 * CHUNK],
    limitSectors: 128,
    now: () => ++clock,
  });
  const [d0, d1] = fx.devices;
  const expected = [filled(64 * CHUNK, 1), filled(32 * CHUNK, 2)];
  for (let i = 0; i < 40; i++) {
    const data = filled(CHUNK / 2, 0x10 + i);
    await d0.tracker.write(i * CHUNK + 100, data);
    expected[0].set(data, i * CHUNK + 100);
    await sleep(0); // let storage growth and the store worker run
  }
  await settle(fx);
  assert.equal(fx.snapshot.state, "corrupted");
  assert.equal(fx.snapshot.deviceError("d0"), 28);
  assert.equal(fx.snapshot.storageInfo().filledSectors, 128, "filled exactly to the limit");
  assert.equal(fx.snapshot.storageInfo().overflowed, true);
  const copies = fx.engine.stats.cowCopies;
  assert.ok(copies < 40, "copy-on-write stopped after corruption");
  // The other device's next store fails on the full storage too.
  for (let i = 0; i < 4; i++) {
    await d1.tracker.write(i * CHUNK, filled(CHUNK, 0x60));
    expected[1].set(filled(CHUNK, 0x60), i * CHUNK);
  }
  await settle(fx);
  const events = await drainEvents(fx);
  assert.deepEqual(events.map((e) => e.code), ["no_space", "corrupted", "corrupted"]);
  assert.deepEqual(events[0], { code: "no_space", timeMs: events[0].timeMs, requestedSectors: 64 });
  assert.deepEqual(events[1], {
    code: "corrupted",
    timeMs: events[1].timeMs,
    deviceId: "d0",
    errorCode: 28,
    errorName: "ENOSPC",
  });
  assert.equal(events[2].code === "corrupted" && events[2].deviceId, "d1");
  assert.ok(events[0].timeMs < events[1].timeMs);
  await assert.rejects(fx.snapshot.image("d0").read(0, new Uint8Array(512)), corrupted);
  await assert.rejects(fx.snapshot.image("d1").read(0, new Uint8Array(512)), corrupted);
  assert.deepEqual(d0.memory.snapshotBytes(), expected[0]);
  assert.deepEqual(d1.memory.snapshotBytes(), expected[1]);
  await fx.close();
});

Deno.test("storage whose writes fail: corrupted EIO once, originals intact, images fail", async () => {
  const fx = await setupEngine({ sizes: [16 * CHUNK], writable: true });
  const { tracker, memory } = fx.devices[0];
  fx.storage.failWrite = () => ioError();
  const expected = filled(16 * CHUNK, 1);
  for (let i = 0; i < 8; i++) {
    await tracker.write(i * CHUNK, filled(CHUNK, 0x30 + i));
    expected.set(filled(CHUNK, 0x30 + i), i * CHUNK);
  }
  await settle(fx);
  const events = await drainEvents(fx);
  assert.equal(events.length, 1);
  assert.deepEqual(events[0], {
    code: "corrupted",
    timeMs: events[0].timeMs,
    deviceId: "d0",
    errorCode: 5,
    errorName: "EIO",
  });
  assert.equal(fx.snapshot.state, "corrupted");
  assert.equal(fx.snapshot.deviceError("d0"), 5);
  assert.ok(fx.engine.stats.storeFailures >= 1);
  assert.deepEqual(memory.snapshotBytes(), expected);
  const image = fx.snapshot.image("d0");
  await assert.rejects(image.read(15 * CHUNK, new Uint8Array(10)), corrupted);
  await assert.rejects(image.write(15 * CHUNK, filled(10, 1)), corrupted);
  await fx.close();
});

Deno.test("an original that fails to load a chunk corrupts the image with EIO; the write lands", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const { tracker, store, memory } = fx.devices[0];
  store.failRead = () => ioError();
  await tracker.write(CHUNK, filled(CHUNK, 9));
  assert.deepEqual(memory.snapshotBytes(CHUNK, CHUNK), filled(CHUNK, 9));
  assert.equal(fx.snapshot.deviceError("d0"), 5);
  const [event] = (await fx.snapshot.waitEvents({ timeoutMs: 0 })).events;
  assert.equal(event?.code === "corrupted" && event.errorCode, 5);
  store.failRead = undefined;
  await assert.rejects(fx.snapshot.image("d0").read(0, new Uint8Array(1)), corrupted);
  await fx.close();
});

Deno.test("an image read overtaken by corruption fails rather than return later data", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const { tracker, store } = fx.devices[0];
  let release!: () => void;
  store.readGate = new Promise((resolve) => (release = resolve));
  const reading = fx.snapshot.image("d0").read(0, new Uint8Array(CHUNK));
  await sleep(1);
  fx.snapshot.diffArea("d0")!.setCorrupted(28);
  await tracker.write(0, filled(CHUNK, 0x99)); // skips copy-on-write, lands mid-read
  store.readGate = undefined;
  release();
  await assert.rejects(reading, corrupted);
  await fx.close();
});

Deno.test("destroy during I/O: no stray failures, originals hold every write", async () => {
  const slots = 256;
  const size = slots * 1024;
  const imageOutcomes = { failed: 0, succeeded: 0 };
  for (let round = 0; round < 8; round++) {
    const rng = new Prng(1000 + round);
    const fx = await setupEngine({ sizes: [size, size], writable: true, limitSectors: 4096 });
    const delay = async () => {
      if (rng.chance(0.05)) await sleep(0);
      for (let i = rng.int(6); i > 0; i--) await Promise.resolve();
    };
    for (const device of fx.devices) device.store.delay = delay;
    fx.storage.delay = delay;
    const expected = fx.devices.map((_, i) => filled(size, i + 1));
    const originalWrites: Promise<void>[] = [];
    const imageOps: Array<Promise<unknown>> = [];
    const track = (operation: Promise<void>) => imageOps.push(operation.then(() => "ok", (e) => e));
    const order = fx.devices.map(() => Array.from({ length: slots }, (_, i) => i));
    for (const list of order) list.sort(() => rng.next() - 0.5);
    const images = new Map(fx.devices.map(({ tracker }) => [
      tracker.name,
      fx.snapshot.image(tracker.name),
    ]));
    const imageOf = (name: string) => images.get(name)!;
    let destroying: Promise<void> | undefined;
    const destroyAt = rng.range(50, 400);
    for (let op = 0; op < 500; op++) {
      if (op === destroyAt) destroying = fx.snapshot.destroy();
      if (op % 25 === 0) await delay(); // let operations (and destroy) progress between waves
      const d = rng.int(2);
      const { tracker } = fx.devices[d];
      const kind = rng.int(3);
      if (kind === 0 && order[d].length > 0) {
        // Each original write goes to its own 1 KiB slot, so the final content is known.
        const slot = order[d].pop()!;
        const data = rng.bytes(1024);
        expected[d].set(data, slot * 1024);
        originalWrites.push(tracker.write(slot * 1024, data));
      } else if (kind === 1) {
        // Image reads of the first half must show the device at take.
        const offset = rng.int(size / 2 - 4096);
        const into = new Uint8Array(rng.range(1, 4096));
        track(
          imageOf(tracker.name).read(offset, into).then(() => {
            assert.ok(into.every((b) => b === d + 1), "image read returned the data at take");
          }),
        );
      } else {
        // Image writes go to the second half only.
        const offset = size / 2 + rng.int(size / 2 - 2048);
        track(imageOf(tracker.name).write(offset, rng.bytes(rng.range(1, 2048))));
      }
    }
    await destroying;
    const writes = await Promise.allSettled(originalWrites);
    assert.ok(writes.every((r) => r.status === "fulfilled"), "every original write succeeds");
    for (const outcome of await Promise.all(imageOps)) {
      if (outcome === "ok") {
        imageOutcomes.succeeded += 1;
      } else {
        assert.ok(outcome instanceof ServiceError, `image op failed with ${outcome}`);
        assert.equal(outcome.code, "UNAVAILABLE");
        imageOutcomes.failed += 1;
      }
    }
    assert.equal(fx.snapshot.state, "destroyed");
    assert.equal(fx.storage.closed, true);
    assert.equal(fx.storage.usedAfterClose, 0, "nothing touched the closed storage");
    fx.devices.forEach((device, d) => {
      assert.deepEqual(device.memory.snapshotBytes(), expected[d], `device ${d} holds every write`);
    });
    await fx.devices[0].tracker.write(0, filled(1, 0));
    await fx.close();
  }
  assert.ok(imageOutcomes.failed > 0, "some image operations were cut off by destroy");
  assert.ok(imageOutcomes.succeeded > 0, "some image operations completed during destroy");
});

Deno.test("destroy while the store worker is blocked waits for it and closes the storage after", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK], params: { chunkMaximumInQueue: 0 } });
  let release!: () => void;
  fx.storage.writeGate = new Promise((resolve) => (release = resolve));
  for (let i = 0; i < 4; i++) await fx.devices[0].tracker.write(i * CHUNK, filled(1, 5));
  let destroyed = false;
  const destroying = fx.snapshot.destroy().then(() => (destroyed = true));
  await sleep(5);
  assert.equal(destroyed, false);
  assert.equal(fx.storage.closed, false);
  fx.storage.writeGate = undefined;
  release();
  await destroying;
  assert.equal(fx.storage.closed, true);
  assert.equal(fx.storage.usedAfterClose, 0);
  assert.equal(fx.engine.stats.chunksStored, 1, "the worker stopped after its current chunk");
  await fx.close();
});
