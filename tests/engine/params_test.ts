import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import {
  chunkSizing,
  DEFAULT_ENGINE_PARAMS,
  type EngineParams,
  resolveEngineParams,
  trackingBlockSizing,
} from "../../src/engine/params.ts";

const small: EngineParams = resolveEngineParams({
  trackingBlockMinimumShift: 12,
  trackingBlockMaximumShift: 14,
  trackingBlockMaximumCount: 4,
  chunkMinimumShift: 12,
  chunkMaximumShift: 14,
  chunkMaximumCount: 4,
});

Deno.test("DEFAULT_ENGINE_PARAMS are the kernel module's defaults (seed 002)", () => {
  assert.deepEqual({ ...DEFAULT_ENGINE_PARAMS }, {
    trackingBlockMinimumShift: 16,
    trackingBlockMaximumShift: 26,
    trackingBlockMaximumCount: 2_097_152,
    chunkMinimumShift: 18,
    chunkMaximumShift: 26,
    chunkMaximumCount: 2_097_152,
    chunkMaximumInQueue: 16,
    freeDiffBufferPoolSize: 128,
    diffStorageMinimumSectors: 2_097_152,
  });
  assert.ok(Object.isFrozen(DEFAULT_ENGINE_PARAMS));
});

Deno.test("resolveEngineParams() applies overrides and rejects invalid ones", () => {
  const params = resolveEngineParams({ chunkMaximumInQueue: 2, freeDiffBufferPoolSize: 0 });
  assert.equal(params.chunkMaximumInQueue, 2);
  assert.equal(params.freeDiffBufferPoolSize, 0);
  assert.equal(params.chunkMinimumShift, 18);
  const invalid: Array<Record<string, unknown>> = [
    { chunkMinimumShift: 8 },
    { chunkMinimumShift: 12.5 },
    { trackingBlockMaximumCount: 0 },
    { chunkMaximumInQueue: -1 },
    { chunkMinimumShift: 20, chunkMaximumShift: 19 },
    { trackingBlockMinimumShift: 17, trackingBlockMaximumShift: 16 },
    { noSuchParameter: 1 },
    { diffStorageMinimumSectors: "8" },
  ];
  for (const overrides of invalid) {
    assert.throws(
      () => resolveEngineParams(overrides as Partial<EngineParams>),
      (error) => isServiceError(error, "INVALID_ARGUMENT"),
      JSON.stringify(overrides),
    );
  }
});

Deno.test("trackingBlockSizing() keeps the minimum shift while the count fits exactly", () => {
  assert.deepEqual(trackingBlockSizing(4 * 4096, small), { shift: 12, count: 4 });
  assert.deepEqual(trackingBlockSizing(1, small), { shift: 12, count: 1 });
  assert.deepEqual(trackingBlockSizing(0, small), { shift: 12, count: 0 });
});

Deno.test("trackingBlockSizing() grows the block when the count is one over", () => {
  assert.deepEqual(trackingBlockSizing(4 * 4096 + 1, small), { shift: 13, count: 3 });
  assert.deepEqual(trackingBlockSizing(4 * 8192 + 512, small), { shift: 14, count: 3 });
});

Deno.test("trackingBlockSizing() stops at the maximum shift and lets the count exceed", () => {
  assert.deepEqual(trackingBlockSizing(4 * 16384, small), { shift: 14, count: 4 });
  assert.deepEqual(trackingBlockSizing(4 * 16384 + 1, small), { shift: 14, count: 5 });
  assert.deepEqual(trackingBlockSizing(100 * 16384, small), { shift: 14, count: 100 });
});

Deno.test("trackingBlockSizing() with the defaults: 128 GiB fits 64 KiB blocks, more doubles", () => {
  const p = resolveEngineParams();
  assert.deepEqual(trackingBlockSizing(2 ** 37, p), { shift: 16, count: 2_097_152 });
  assert.deepEqual(trackingBlockSizing(2 ** 37 + 512, p), { shift: 17, count: 1_048_577 });
  assert.deepEqual(trackingBlockSizing(2 ** 48, p), { shift: 26, count: 4_194_304 });
});

Deno.test("chunkSizing() grows while the count is over the maximum", () => {
  assert.deepEqual(chunkSizing(4 * 4096, 512, small), { shift: 12, count: 4 });
  assert.deepEqual(chunkSizing(4 * 4096 + 1, 512, small), { shift: 13, count: 3 });
  assert.deepEqual(chunkSizing(4 * 16384, 512, small), { shift: 14, count: 4 });
});

Deno.test("chunkSizing() grows the chunk to the device's minimum I/O size", () => {
  assert.deepEqual(chunkSizing(4096, 8192, small), { shift: 13, count: 1 });
  assert.deepEqual(chunkSizing(4096, 4096, small), { shift: 12, count: 1 });
  assert.deepEqual(chunkSizing(4096, 5000, small), { shift: 13, count: 1 });
  const p = resolveEngineParams();
  assert.deepEqual(chunkSizing(2 ** 30, 2 ** 20, p), { shift: 20, count: 1024 });
});

Deno.test("chunkSizing() beyond the maximum shift is INVALID_ARGUMENT", () => {
  assert.throws(
    () => chunkSizing(4 * 16384 + 1, 512, small),
    (error) =>
      isServiceError(error, "INVALID_ARGUMENT") && /maximum chunk shift 14/.test(error.message),
  );
  assert.throws(
    () => chunkSizing(4096, 32768, small),
    (error) => isServiceError(error, "INVALID_ARGUMENT"),
  );
  const p = resolveEngineParams();
  assert.deepEqual(chunkSizing(2 ** 44, 512, p), { shift: 23, count: 2_097_152 });
  assert.deepEqual(chunkSizing(2 ** 47, 512, p), { shift: 26, count: 2_097_152 });
  assert.throws(
    () => chunkSizing(2 ** 47 + 512, 512, p),
    (error) => isServiceError(error, "INVALID_ARGUMENT"),
  );
});
