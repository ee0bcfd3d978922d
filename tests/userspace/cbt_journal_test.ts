/**
 * The CBT write-intent record on a real file: marks made while an
 * fdatasync runs share the next one; blocks marked already make nothing
 * pending; a record left without a clean close (a crash) restores a
 * superset of the changes with the same generation and numbers, also when
 * the newest header is torn; a reset, a wrap and a corruption are recorded.
 */

import assert from "node:assert/strict";
import { CbtMap } from "../../src/engine/cbt_map.ts";
import { resolveEngineParams } from "../../src/engine/params.ts";
import {
  CbtJournal,
  type DeviceIdentityRecord,
  loadCbtRecord,
} from "../../src/userspace/cbt_journal.ts";

const params = resolveEngineParams({ trackingBlockMinimumShift: 12 });
const BLOCK = 4096;
const identity: DeviceIdentityRecord = {
  path: "/dev/fake",
  kind: "block",
  device: 1793,
  inode: 0,
  sizeBytes: 64 * BLOCK,
};

async function withJournal(
  body: (map: CbtMap, journal: CbtJournal, path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cbt-journal-" });
  const path = `${dir}/cbt/d.cbt`;
  const map = new CbtMap(64 * BLOCK, params);
  const journal = await CbtJournal.open(path, map, { identity });
  try {
    await body(map, journal, path);
  } finally {
    await journal.close({ clean: false });
    await Deno.remove(dir, { recursive: true });
  }
}

async function restored(path: string): Promise<{ map: CbtMap; clean: boolean }> {
  const { record, problem } = await loadCbtRecord(path);
  assert.equal(problem, undefined);
  const map = new CbtMap(64 * BLOCK, params);
  map.restoreState(record!.state);
  return { map, clean: record!.clean };
}

function writeTable(map: CbtMap): number[] {
  return [...map.exportState().writeTable];
}

Deno.test("marks queued during an fdatasync share the next one; marked blocks cost nothing", async () => {
  await withJournal(async (map, journal) => {
    assert.equal(journal.durable(), undefined, "nothing owed at first");
    map.set(0, BLOCK);
    const first = journal.durable();
    assert.ok(first instanceof Promise);
    map.set(BLOCK, BLOCK);
    const second = journal.durable();
    map.set(2 * BLOCK, BLOCK);
    const third = journal.durable();
    assert.notEqual(second, first, "a mark after the sync started waits for the next one");
    assert.equal(third, second, "every mark queued meanwhile shares it");
    await third;
    assert.equal(journal.durable(), undefined);
    map.set(0, 3 * BLOCK);
    assert.equal(journal.durable(), undefined, "blocks marked already make nothing pending");
  });
});

Deno.test("a record never closed (a crash) restores the marks, generation and numbers", async () => {
  await withJournal(async (map, journal, path) => {
    map.set(0, BLOCK);
    map.switch();
    map.set(5 * BLOCK, 2 * BLOCK);
    map.setBoth(9 * BLOCK, 1);
    await journal.durable();
    const { map: back, clean } = await restored(path);
    assert.equal(clean, false);
    assert.equal(back.generationId, map.generationId);
    assert.deepEqual([back.previousNumber, back.activeNumber], [1, 2]);
    assert.deepEqual(writeTable(back), writeTable(map));
    assert.deepEqual([...back.read(0, 64)], [...map.read(0, 64)]);
  });
});

Deno.test("with the newest header torn, the older one restores a superset", async () => {
  await withJournal(async (map, _journal, path) => {
    map.set(BLOCK, BLOCK);
    map.switch();
    map.set(2 * BLOCK, BLOCK);
    // The switch wrote header sequence 2 into slot 0: tear it.
    const file = await Deno.open(path, { write: true });
    await file.write(new Uint8Array(100).fill(0x55));
    file.close();
    const { map: back } = await restored(path);
    assert.equal(back.generationId, map.generationId);
    assert.deepEqual([back.previousNumber, back.activeNumber], [0, 1], "the older numbers");
    back.switch();
    const changed = [...back.read(0, 8)].map((n, block) => (n >= 1 ? block : -1))
      .filter((block) => block >= 0);
    assert.deepEqual(changed, [1, 2], "both blocks count as changed since number 0");
  });
});

Deno.test("a wrap, a reset and a corruption are recorded", async () => {
  await withJournal(async (map, _journal, path) => {
    for (let i = 1; i <= 254; i++) map.switch();
    map.set(0, BLOCK);
    const before = map.generationId;
    map.switch();
    map.set(3 * BLOCK, BLOCK);
    let back = (await restored(path)).map;
    assert.notEqual(back.generationId, before);
    assert.equal(back.generationId, map.generationId);
    assert.deepEqual([back.previousNumber, back.activeNumber], [255, 1]);
    assert.deepEqual(writeTable(back).slice(0, 4), [0, 0, 0, 1], "cleared, then marked");

    assert.throws(() => map.set(63 * BLOCK, 2 * BLOCK));
    assert.equal((await loadCbtRecord(path)).record!.state.corrupted, true);

    map.reset(32 * BLOCK);
    map.set(0, BLOCK);
    const { record } = await loadCbtRecord(path);
    assert.equal(record!.state.blockCount, 32);
    assert.equal(record!.state.corrupted, false);
    back = new CbtMap(32 * BLOCK, params);
    back.restoreState(record!.state);
    assert.deepEqual(writeTable(back).slice(0, 2), [1, 0]);
  });
});

Deno.test("a clean close writes a whole record marked clean", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cbt-journal-" });
  try {
    const path = `${dir}/d.cbt`;
    const map = new CbtMap(64 * BLOCK, params);
    const journal = await CbtJournal.open(path, map, { identity });
    map.set(7 * BLOCK, 1);
    await journal.close({ clean: true, identity: { ...identity, mtimeMs: 42 } });
    map.set(8 * BLOCK, 1);
    const { record } = await loadCbtRecord(path);
    assert.equal(record!.clean, true);
    assert.equal(record!.identity.mtimeMs, 42);
    assert.deepEqual([...record!.state.writeTable.slice(6, 10)], [0, 1, 0, 0]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["d.cbt"], "no .tmp left");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
