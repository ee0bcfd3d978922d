import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { Engine } from "../../src/engine/engine.ts";
import { storageLivesOn } from "../../src/engine/snapshot.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { FaultyStore } from "../_helpers/faulty_store.ts";
import { CHUNK, filled, setupEngine, sleep, SMALL_PARAMS } from "../_helpers/engine_fixture.ts";
import { Prng } from "../_helpers/prng.ts";

function storage(): MemoryStore {
  return new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 });
}

const code = (name: string) => (error: unknown) => isServiceError(error, name as "CONFLICT");

Deno.test("Snapshot goes created -> taken -> corrupted -> destroyed", async () => {
  let clock = 1000;
  const fx = await setupEngine({ sizes: [4 * CHUNK], take: false, now: () => clock++ });
  const { snapshot } = fx;
  assert.match(snapshot.id, /^[0-9a-f-]{36}$/);
  assert.equal(snapshot.state, "created");
  assert.equal(snapshot.createdAtMs, 1000);
  assert.equal(snapshot.takenAtMs, undefined);
  assert.throws(() => snapshot.image("d0"), code("NOT_FOUND"));
  await snapshot.take();
  assert.equal(snapshot.state, "taken");
  assert.equal(snapshot.takenAtMs, 1001);
  snapshot.diffArea("d0")!.setCorrupted(5);
  assert.equal(snapshot.state, "corrupted");
  assert.equal(snapshot.deviceError("d0"), 5);
  await snapshot.destroy();
  assert.equal(snapshot.state, "destroyed");
  await fx.close();
});

Deno.test("Snapshot.add() only before take, for devices in no other snapshot", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  await engine.attach("a", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  await engine.attach("b", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  await engine.attach("c", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  const one = await engine.createSnapshot({
    storage: storage(),
    limitSectors: 2048,
    trackers: ["a"],
  });
  assert.throws(() => one.add(engine.tracker("a")), code("CONFLICT"));
  one.add(engine.tracker("b"));
  assert.deepEqual(one.trackers().map((t) => t.name), ["a", "b"]);
  assert.equal(engine.tracker("b").snapshot, one);
  const other = storage();
  await assert.rejects(
    engine.createSnapshot({ storage: other, limitSectors: 2048, trackers: ["b"] }),
    code("CONFLICT"),
  );
  assert.equal(other.closed, true, "the storage is closed when create fails");
  await one.take();
  assert.throws(() => one.add(engine.tracker("c")), code("CONFLICT"));
  await assert.rejects(one.take(), code("CONFLICT"));
  await one.destroy();
  await assert.rejects(one.take(), code("CONFLICT"));
  assert.equal(engine.tracker("a").snapshot, undefined);
  await engine.close();
});

Deno.test("a snapshot without devices cannot be taken", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const snapshot = await engine.createSnapshot({ storage: storage(), limitSectors: 2048 });
  await assert.rejects(snapshot.take(), code("INVALID_ARGUMENT"));
  await engine.close();
});

Deno.test("the difference storage must not live on a member device", async () => {
  const engine = new Engine({ params: SMALL_PARAMS });
  const device = new MemoryStore({ capacityBytes: 4 * CHUNK });
  await engine.attach("a", device);
  const block = new FaultyStore(new MemoryStore({ capacityBytes: 4 * CHUNK }), {
    identity: { kind: "block", device: 0x801, inode: 0 },
  });
  await engine.attach("sda1", block);
  const sameStore = new FaultyStore(storage(), { identity: device.identity });
  await assert.rejects(
    engine.createSnapshot({ storage: sameStore, limitSectors: 2048, trackers: ["a"] }),
    code("INVALID_ARGUMENT"),
  );
  const fileOnIt = new FaultyStore(storage(), {
    identity: { kind: "file", device: 0x801, inode: 12 },
  });
  const snapshot = await engine.createSnapshot({ storage: fileOnIt, limitSectors: 2048 });
  snapshot.add(engine.tracker("a"));
  assert.throws(() => snapshot.add(engine.tracker("sda1")), code("INVALID_ARGUMENT"));
  assert.equal(engine.tracker("sda1").snapshot, undefined);
  await engine.close();
});

Deno.test("storageLivesOn() compares store identities", () => {
  const blockA = { kind: "block", device: 0x800, inode: 0 } as const;
  const fileOnA = { kind: "file", device: 0x800, inode: 5 } as const;
  const fileOnB = { kind: "file", device: 0x810, inode: 5 } as const;
  assert.equal(storageLivesOn(fileOnA, blockA), true, "file on the member's file system");
  assert.equal(storageLivesOn(blockA, blockA), true, "the same block device");
  assert.equal(storageLivesOn(fileOnA, fileOnA), true, "the same regular file");
  assert.equal(storageLivesOn(fileOnB, blockA), false);
  assert.equal(storageLivesOn(fileOnA, { ...fileOnA, inode: 6 }), false, "another file, same fs");
  assert.equal(storageLivesOn(blockA, fileOnA), false);
  assert.equal(
    storageLivesOn({ kind: "memory", device: 3, inode: 0 }, {
      kind: "memory",
      device: 4,
      inode: 0,
    }),
    false,
  );
});

Deno.test("take is atomic across devices: no write lands between one switch and another", async () => {
  const slots = 64;
  for (let round = 0; round < 6; round++) {
    const rng = new Prng(round + 1);
    const fx = await setupEngine({ sizes: [slots * 512, slots * 512], take: false, fill: () => 0 });
    const [a, b] = fx.devices;
    for (const device of fx.devices) {
      device.store.delay = async () => {
        for (let i = rng.int(4); i > 0; i--) await Promise.resolve();
      };
    }
    // Step k stamps slot k % slots with k, on a and then on b: b never gets ahead of a.
    const stamp = (k: number) => {
      const sector = new Uint8Array(512);
      new DataView(sector.buffer).setUint32(0, k + 1);
      return sector;
    };
    const takeAt = rng.range(50, 250);
    let taking: Promise<void> | undefined;
    for (let k = 0; k < 400; k++) {
      if (k === takeAt) taking = fx.snapshot.take();
      await a.tracker.write((k % slots) * 512, stamp(k));
      await b.tracker.write((k % slots) * 512, stamp(k));
    }
    await taking;
    const newest = async (name: string) => {
      const image = new Uint8Array(slots * 512);
      await fx.snapshot.image(name).read(0, image);
      const view = new DataView(image.buffer);
      let max = 0;
      for (let slot = 0; slot < slots; slot++) max = Math.max(max, view.getUint32(slot * 512));
      for (let slot = 0; slot < slots; slot++) {
        const expected = max - 1 - ((max - 1 - slot) % slots + slots) % slots;
        const want = expected >= 0 ? expected + 1 : 0;
        assert.equal(
          view.getUint32(slot * 512),
          want,
          `${name} slot ${slot} is a consistent prefix`,
        );
      }
      return max;
    };
    const inA = await newest("d0");
    const inB = await newest("d1");
    assert.ok(inA > 0 && inA < 400, `taken mid-stream (${inA})`);
    assert.ok(inB === inA || inB === inA - 1, `image a holds step ${inA}, image b ${inB}`);
    await fx.close();
  }
});

Deno.test("take waits for writes in flight: each lands wholly before or wholly after it", async () => {
  for (let round = 0; round < 10; round++) {
    const rng = new Prng(100 + round);
    const fx = await setupEngine({ sizes: [64 * CHUNK], take: false, fill: () => 0 });
    const { tracker, store } = fx.devices[0];
    store.delay = async () => {
      if (rng.chance(0.3)) await sleep(0);
      for (let i = rng.int(5); i > 0; i--) await Promise.resolve();
    };
    // 16 writes of 3 chunks each (values 1..16), in flight when take starts.
    const before = Array.from(
      { length: 16 },
      (_, i) => tracker.write(i * 4 * CHUNK + 100, filled(3 * CHUNK, i + 1)),
    );
    const taking = fx.snapshot.take();
    // Writes after take touch one chunk of each range, forcing copies.
    const after = Array.from(
      { length: 16 },
      (_, i) => taking.then(() => tracker.write((i * 4 + 1) * CHUNK + 7, filled(1, 0xff))),
    );
    await Promise.all([...before, taking, ...after]);
    const image = new Uint8Array(64 * CHUNK);
    await fx.snapshot.image("d0").read(0, image);
    for (let i = 0; i < 16; i++) {
      const range = image.subarray(i * 4 * CHUNK + 100, i * 4 * CHUNK + 100 + 3 * CHUNK);
      const value = range[0];
      assert.ok(value === 0 || value === i + 1, `write ${i} has a foreign value ${value}`);
      assert.ok(range.every((b) => b === value), `write ${i} is torn in the image`);
    }
    await fx.close();
  }
});

Deno.test("take checks chunk sizing for all devices before switching any", async () => {
  const engine = new Engine({ params: { ...SMALL_PARAMS, chunkMaximumShift: 12 } });
  const a = await engine.attach("a", new MemoryStore({ capacityBytes: 4 * CHUNK }));
  await engine.attach("big", new MemoryStore({ capacityBytes: 4 * CHUNK, minIoBytes: 8192 }));
  const snapshot = await engine.createSnapshot({
    storage: storage(),
    limitSectors: 2048,
    trackers: ["a", "big"],
  });
  await assert.rejects(snapshot.take(), code("INVALID_ARGUMENT"));
  assert.equal(a.cbt.previousNumber, 0, "not switched");
  assert.equal(snapshot.state, "created");
  assert.equal(a.diffArea, undefined);
  await a.write(0, filled(1, 1)); // not frozen
  await engine.close();
});

Deno.test("destroy keeps the devices attached with their CBT and closes the storage", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const { tracker, memory } = fx.devices[0];
  const image = fx.snapshot.image("d0");
  await tracker.write(0, filled(10, 9));
  const waiting = fx.snapshot.waitEvents({ timeoutMs: 60_000 });
  await fx.snapshot.destroy();
  assert.deepEqual((await waiting).events, [], "pending waits end at destroy");
  assert.equal(fx.storage.closed, true);
  assert.equal(fx.storage.usedAfterClose, 0);
  assert.equal(tracker.snapshot, undefined);
  assert.equal(tracker.diffArea, undefined);
  assert.equal(fx.engine.tracker("d0"), tracker);
  assert.equal(tracker.cbt.previousNumber, 1);
  assert.throws(() => fx.engine.snapshot(fx.snapshot.id), code("NOT_FOUND"));
  assert.throws(() => fx.snapshot.image("d0"), code("NOT_FOUND"));
  await assert.rejects(image.read(0, new Uint8Array(1)), code("UNAVAILABLE"));
  await assert.rejects(fx.snapshot.waitEvents({ timeoutMs: 1 }), code("NOT_FOUND"));
  await fx.snapshot.destroy(); // idempotent
  await tracker.write(CHUNK, filled(10, 8)); // no copy-on-write any more
  assert.equal(memory.snapshotBytes(CHUNK, 1)[0], 8);
  assert.equal(fx.engine.stats.cowCopies, 1);
  await fx.close();
});

Deno.test("Snapshot.waitEvents() answers no events on timeout", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK] });
  const page = await fx.snapshot.waitEvents({ timeoutMs: 20 });
  assert.deepEqual(page.events, []);
  assert.equal(page.truncated, false);
  await fx.close();
});

Deno.test("take records each member's CBT position before and after the switch", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK, 2 * CHUNK] });
  for (const { tracker } of fx.devices) {
    const atTake = fx.snapshot.cbtAtTake(tracker.name);
    assert.ok(atTake, `recorded for ${tracker.name}`);
    assert.equal(atTake.before.changesNumber, 0);
    assert.equal(atTake.after.changesNumber, 1);
    assert.equal(atTake.after.generationId, tracker.cbt.generationId);
  }
  assert.equal(fx.snapshot.cbtAtTake("nonexistent"), undefined);
  await fx.close();
});

Deno.test("Snapshot.storageInfo() reports the storage in bytes and sectors", async () => {
  const fx = await setupEngine({ sizes: [8 * CHUNK], params: { chunkMaximumInQueue: 0 } });
  await fx.devices[0].tracker.write(0, filled(1, 1));
  await sleep(1);
  assert.deepEqual(fx.snapshot.storageInfo(), {
    path: "memory:storage",
    capacityBytes: 64 * 512,
    usedBytes: CHUNK,
    limitBytes: 2048 * 512,
    capacitySectors: 64,
    filledSectors: 8,
    requestedSectors: 64,
    limitSectors: 2048,
    overflowed: false,
  });
  assert.throws(() => fx.snapshot.deviceError("nope"), code("NOT_FOUND"));
  assert.equal(fx.snapshot.deviceError("d0"), 0);
  await fx.close();
});
