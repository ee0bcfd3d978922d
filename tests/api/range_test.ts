import assert from "node:assert/strict";
import { coalesceRanges, MAX_RANGES, parseRange } from "../../src/api/range.ts";

Deno.test("parseRange() resolves the three single-range forms", () => {
  const one = (offset: number, length: number) => ({
    kind: "partial",
    ranges: [{ offset, length }],
  });
  assert.deepEqual(parseRange("bytes=0-99", 1000), one(0, 100));
  assert.deepEqual(parseRange("bytes=900-", 1000), one(900, 100));
  assert.deepEqual(parseRange("bytes=-10", 1000), one(990, 10));
  assert.deepEqual(parseRange("bytes=990-5000", 1000), one(990, 10));
  assert.deepEqual(parseRange("bytes=-5000", 1000), one(0, 1000));
});

Deno.test("parseRange() keeps several ranges, sorted, and drops the unsatisfiable ones", () => {
  assert.deepEqual(parseRange("bytes=500-599, 0-9,-10", 1000), {
    kind: "partial",
    ranges: [{ offset: 0, length: 10 }, { offset: 500, length: 100 }, {
      offset: 990,
      length: 10,
    }],
  });
  assert.deepEqual(parseRange("bytes=0-1,2000-3000,-0", 1000), {
    kind: "partial",
    ranges: [{ offset: 0, length: 2 }],
  });
});

Deno.test("parseRange() coalesces overlapping and touching ranges (RFC 9110 14.3)", () => {
  assert.deepEqual(parseRange("bytes=0-99,50-149,150-199,300-399,-800", 1000), {
    kind: "partial",
    ranges: [{ offset: 0, length: 1000 }],
  });
  assert.deepEqual(parseRange("bytes=10-19,0-9,30-39,35-", 1000), {
    kind: "partial",
    ranges: [{ offset: 0, length: 20 }, { offset: 30, length: 970 }],
  });
  assert.deepEqual(coalesceRanges([{ offset: 5, length: 1 }, { offset: 1, length: 2 }]), [
    { offset: 1, length: 2 },
    { offset: 5, length: 1 },
  ]);
});

Deno.test("parseRange() reports unsatisfiable sets and too many ranges", () => {
  assert.deepEqual(parseRange("bytes=1000-", 1000), { kind: "unsatisfiable", reason: "beyond" });
  assert.deepEqual(parseRange("bytes=-0", 1000), { kind: "unsatisfiable", reason: "beyond" });
  assert.deepEqual(parseRange("bytes=1000-1001,2000-", 1000), {
    kind: "unsatisfiable",
    reason: "beyond",
  });
  const many = Array.from({ length: MAX_RANGES + 1 }, (_, i) => `${i * 2}-${i * 2}`).join(",");
  assert.deepEqual(parseRange(`bytes=${many}`, 10000), {
    kind: "unsatisfiable",
    reason: "too-many",
  });
  const most = Array.from({ length: MAX_RANGES }, (_, i) => `${i * 2}-${i * 2}`).join(",");
  const allowed = parseRange(`bytes=${most}`, 10000);
  assert.equal(allowed.kind === "partial" && allowed.ranges.length, MAX_RANGES);
});

Deno.test("parseRange() ignores headers it does not serve (the whole body is sent)", () => {
  assert.deepEqual(parseRange(null, 1000), { kind: "whole" });
  assert.deepEqual(parseRange("items=0-1", 1000), { kind: "whole" });
  assert.deepEqual(parseRange("bytes=5-1", 1000), { kind: "whole" });
  assert.deepEqual(parseRange("bytes=0-1,x", 1000), { kind: "whole" });
  assert.deepEqual(parseRange("bytes=,", 1000), { kind: "whole" });
  assert.deepEqual(parseRange("bytes=99999999999999999999-", 1000), { kind: "whole" });
});
