import assert from "node:assert/strict";
import { planRead } from "../../src/nbd/read_plan.ts";

const range = { offset: 65536, length: 65536 };

Deno.test("planRead() sends zero extents of 4 KiB or more as holes and the rest as data", () => {
  const runs = planRead([
    { length: 8192, flags: 3 },
    { length: 1024, flags: 0 },
    { length: 1024, flags: 2 },
    { length: 2048, flags: 0 },
    { length: 1 << 20, flags: 2 },
  ], range);
  assert.deepEqual(runs, [
    { offset: 65536, length: 8192, hole: true },
    { offset: 73728, length: 4096, hole: false },
    { offset: 77824, length: 53248, hole: true },
  ]);
});

Deno.test("planRead() treats what the extents leave out as data, and finds nothing without holes", () => {
  assert.deepEqual(planRead([{ length: 16384, flags: 2 }], range), [
    { offset: 65536, length: 16384, hole: true },
    { offset: 81920, length: 49152, hole: false },
  ]);
  assert.equal(planRead([{ length: 65536, flags: 0 }], range), undefined);
  assert.equal(
    planRead([{ length: 2048, flags: 2 }, { length: 63488, flags: 0 }], range),
    undefined,
  );
});
