import assert from "node:assert/strict";
import { CbtMap } from "../../src/engine/cbt_map.ts";
import { resolveEngineParams } from "../../src/engine/params.ts";

const params = resolveEngineParams({
  trackingBlockMinimumShift: 12,
  trackingBlockMaximumShift: 16,
  trackingBlockMaximumCount: 256,
});
const BLOCK = 4096;
const CAPACITY = 200 * BLOCK + 512;

/** A seeded xorshift generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** Both tables, seen through read() after a switch, and the map's numbers. */
function tablesOf(map: CbtMap): [Uint8Array, Uint8Array] {
  const read = map.read(0, map.blockCount);
  map.switch();
  return [read, map.read(0, map.blockCount)];
}

Deno.test("CbtMap.markDirtySectors() marks as setBoth() range by range does, over switches and the wrap at 256", () => {
  const next = random(7);
  const sectors = CAPACITY / 512;
  for (let round = 0; round < 40; round++) {
    const fast = new CbtMap(CAPACITY, params);
    const slow = new CbtMap(CAPACITY, params);
    // Age both maps alike, sometimes past the wrap of the change number.
    const switches = round % 5 === 0 ? 250 + (round % 10) : Math.floor(next() * 6);
    for (let s = 0; s < switches; s++) {
      const offset = Math.floor(next() * CAPACITY / 2);
      fast.set(offset, 8192);
      slow.set(offset, 8192);
      fast.switch();
      slow.switch();
    }
    const ranges = Array.from({ length: 1 + Math.floor(next() * 30) }, () => {
      const offsetSectors = Math.floor(next() * (sectors - 1));
      const countSectors = 1 + Math.floor(next() * Math.min(300, sectors - offsetSectors - 1));
      return { offsetSectors, countSectors };
    });
    fast.markDirtySectors(ranges);
    for (const { offsetSectors, countSectors } of ranges) {
      slow.setBoth(offsetSectors * 512, countSectors * 512);
    }
    assert.deepEqual(tablesOf(fast), tablesOf(slow), `round ${round}`);
  }
});

Deno.test("CbtMap.markDirtySectors() checks every range before marking any", () => {
  const map = new CbtMap(CAPACITY, params);
  assert.throws(
    () =>
      map.markDirtySectors([{ offsetSectors: 0, countSectors: 8 }, {
        offsetSectors: map.blockCount * (BLOCK / 512),
        countSectors: 1,
      }]),
    /the map has/,
  );
  map.switch();
  assert.deepEqual(map.read(0, 2), new Uint8Array(2), "nothing was marked");
});
