/**
 * The difference area's shared control (DiffArea.control, AreaControl),
 * which Workers reading an image themselves rely on: CORRUPTED follows the
 * area, STOPPING is set when destroy begins, and destroy waits for the
 * Workers' image reads counted in IMAGE_IO before copy-on-write stops.
 */

import assert from "node:assert/strict";
import { AreaControl } from "../../src/engine/diff_area.ts";
import { Engine } from "../../src/engine/engine.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { CHUNK, SMALL_PARAMS } from "../_helpers/engine_fixture.ts";

async function takenArea() {
  const engine = new Engine({ params: SMALL_PARAMS });
  await engine.attach("a", new MemoryStore({ capacityBytes: 8 * CHUNK }));
  const snapshot = await engine.createSnapshot({
    storage: new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 }),
    limitSectors: 2048,
    trackers: ["a"],
  });
  await snapshot.take();
  return { engine, snapshot, area: snapshot.image("a").diffArea };
}

Deno.test("diff area control: CORRUPTED is set with the area", async () => {
  const { engine, area } = await takenArea();
  try {
    assert.equal(Atomics.load(area.control, AreaControl.CORRUPTED), 0);
    area.setCorrupted(5);
    assert.equal(Atomics.load(area.control, AreaControl.CORRUPTED), 1);
  } finally {
    await engine.close();
  }
});

Deno.test("diff area control: destroy sets STOPPING and waits for the Workers' image reads in flight", async () => {
  const { engine, snapshot, area } = await takenArea();
  try {
    Atomics.add(area.control, AreaControl.IMAGE_IO, 1);
    let destroyed = false;
    const destroying = snapshot.destroy().then(() => destroyed = true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(Atomics.load(area.control, AreaControl.STOPPING), 1);
    assert.equal(destroyed, false, "destroy waits while a Worker's read is in flight");
    Atomics.sub(area.control, AreaControl.IMAGE_IO, 1);
    await destroying;
    assert.equal(destroyed, true);
  } finally {
    await engine.close();
  }
});
