import assert from "node:assert/strict";
import { parseRange } from "../../src/api/range.ts";

Deno.test("parseRange() resolves the three single-range forms", () => {
  assert.deepEqual(parseRange("bytes=0-99", 1000), {
    kind: "partial",
    range: { offset: 0, length: 100 },
  });
  assert.deepEqual(parseRange("bytes=900-", 1000), {
    kind: "partial",
    range: { offset: 900, length: 100 },
  });
  assert.deepEqual(parseRange("bytes=-10", 1000), {
    kind: "partial",
    range: { offset: 990, length: 10 },
  });
  assert.deepEqual(parseRange("bytes=990-5000", 1000), {
    kind: "partial",
    range: { offset: 990, length: 10 },
  });
  assert.deepEqual(parseRange("bytes=-5000", 1000), {
    kind: "partial",
    range: { offset: 0, length: 1000 },
  });
});

Deno.test("parseRange() reports unsatisfiable ranges and ignores what it does not serve", () => {
  assert.deepEqual(parseRange("bytes=1000-", 1000), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange("bytes=-0", 1000), { kind: "unsatisfiable" });
  assert.deepEqual(parseRange(null, 1000), { kind: "whole" });
  assert.deepEqual(parseRange("bytes=0-1,5-6", 1000), { kind: "whole" });
  assert.deepEqual(parseRange("items=0-1", 1000), { kind: "whole" });
  assert.deepEqual(parseRange("bytes=5-1", 1000), { kind: "whole" });
});
