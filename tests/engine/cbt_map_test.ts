import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { CBT_HEADER_BYTES, CbtHeader, CbtMap } from "../../src/engine/cbt_map.ts";
import { resolveEngineParams } from "../../src/engine/params.ts";

const params = resolveEngineParams({
  trackingBlockMinimumShift: 12,
  trackingBlockMaximumShift: 16,
  trackingBlockMaximumCount: 64,
});
const BLOCK = 4096;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function writeTableOf(map: CbtMap): Uint8Array {
  // The write table becomes visible in the read table at the next switch.
  map.switch();
  return map.read(0, map.blockCount);
}

Deno.test("CbtMap starts with previous 0, active 1, a random generation and zeroed tables", () => {
  const map = new CbtMap(10 * BLOCK + 1, params);
  assert.equal(map.blockShift, 12);
  assert.equal(map.blockSizeBytes, BLOCK);
  assert.equal(map.blockCount, 11);
  assert.equal(map.previousNumber, 0);
  assert.equal(map.activeNumber, 1);
  assert.match(map.generationId, UUID);
  assert.notEqual(new CbtMap(BLOCK, params).generationId, map.generationId);
  assert.equal(map.isCorrupted, false);
  assert.deepEqual(map.read(0, 11), new Uint8Array(11));
  assert.deepEqual(map.info(), {
    capacityBytes: 10 * BLOCK + 1,
    blockSizeBytes: BLOCK,
    blockCount: 11,
    generationId: map.generationId,
    changesNumber: 0,
  });
});

Deno.test("CbtMap.set() marks the write table only, with every block a range touches", () => {
  const map = new CbtMap(8 * BLOCK, params);
  map.set(BLOCK - 1, 2); // straddles blocks 0 and 1
  map.set(5 * BLOCK, BLOCK); // exactly block 5
  map.set(7 * BLOCK, 0); // zero length: nothing
  assert.deepEqual(map.read(0, 8), new Uint8Array(8), "read table unchanged before switch");
  map.switch();
  assert.deepEqual([...map.read(0, 8)], [1, 1, 0, 0, 0, 1, 0, 0]);
  assert.equal(map.previousNumber, 1);
  assert.equal(map.activeNumber, 2);
  assert.equal(map.info().changesNumber, 1);
});

Deno.test("CbtMap.set() only raises a block's number", () => {
  const map = new CbtMap(4 * BLOCK, params);
  map.switch();
  map.switch(); // active 3
  map.set(0, BLOCK);
  map.setBoth(BLOCK, BLOCK); // write table 3, read table 2
  assert.deepEqual([...writeTableOf(map)], [3, 3, 0, 0]);
  assert.equal(map.activeNumber, 4);
  map.set(0, 2 * BLOCK);
  map.switch();
  assert.deepEqual([...map.read(0, 4)], [4, 4, 0, 0]);
});

Deno.test("CbtMap.switch() resets at 256: active 1, previous 255, new generation, cleared write table", () => {
  const map = new CbtMap(4 * BLOCK, params);
  const first = map.generationId;
  for (let i = 0; i < 253; i++) map.switch();
  assert.equal(map.activeNumber, 254);
  map.set(0, BLOCK);
  map.switch();
  assert.equal(map.previousNumber, 254);
  assert.equal(map.activeNumber, 255);
  assert.equal(map.generationId, first);
  assert.deepEqual([...map.read(0, 4)], [254, 0, 0, 0]);
  map.set(BLOCK, BLOCK);
  map.switch();
  assert.equal(map.previousNumber, 255);
  assert.equal(map.activeNumber, 1);
  assert.notEqual(map.generationId, first);
  assert.match(map.generationId, UUID);
  // The read table is not refreshed at the wrap (cbt_map_switch).
  assert.deepEqual([...map.read(0, 4)], [254, 0, 0, 0]);
  // The write table was cleared: the next switch shows only new writes.
  map.set(3 * BLOCK, 1);
  map.switch();
  assert.equal(map.previousNumber, 1);
  assert.equal(map.activeNumber, 2);
  assert.deepEqual([...map.read(0, 4)], [0, 0, 0, 1]);
});

Deno.test("CbtMap.set() beyond the map corrupts it until reset, and throws", () => {
  const map = new CbtMap(4 * BLOCK, params);
  assert.throws(
    () => map.set(3 * BLOCK, 2 * BLOCK),
    (error) => isServiceError(error, "OUT_OF_RANGE"),
  );
  assert.equal(map.isCorrupted, true);
  assert.throws(() => map.read(0, 1), (error) => isServiceError(error, "IO"));
  assert.throws(() => map.set(0, 1), (error) => isServiceError(error, "IO"));
  assert.throws(() => map.setBoth(0, 1), (error) => isServiceError(error, "IO"));
  const generation = map.generationId;
  map.reset(8 * BLOCK);
  assert.equal(map.isCorrupted, false);
  assert.equal(map.blockCount, 8);
  assert.equal(map.capacityBytes, 8 * BLOCK);
  assert.equal(map.previousNumber, 0);
  assert.equal(map.activeNumber, 1);
  assert.notEqual(map.generationId, generation);
  assert.deepEqual(map.read(0, 8), new Uint8Array(8));
});

Deno.test("CbtMap.setBoth() marks write table with active, read table with previous", () => {
  const map = new CbtMap(4 * BLOCK, params);
  map.switch(); // previous 1, active 2
  map.setBoth(2 * BLOCK + 100, 10);
  assert.deepEqual([...map.read(0, 4)], [0, 0, 1, 0]);
  map.switch(); // read table = write table
  assert.deepEqual([...map.read(0, 4)], [0, 0, 2, 0]);
});

Deno.test("CbtMap.setBoth() out of range throws without marking or corrupting", () => {
  const map = new CbtMap(4 * BLOCK, params);
  map.switch();
  assert.throws(
    () => map.setBoth(2 * BLOCK, 3 * BLOCK),
    (error) => isServiceError(error, "OUT_OF_RANGE"),
  );
  assert.equal(map.isCorrupted, false);
  assert.deepEqual(map.read(0, 4), new Uint8Array(4));
});

Deno.test("CbtMap.markDirtySectors() marks sector ranges in both tables, all or nothing", () => {
  const map = new CbtMap(4 * BLOCK, params);
  map.switch();
  map.markDirtySectors([{ offsetSectors: 0, countSectors: 1 }, {
    offsetSectors: 15,
    countSectors: 2,
  }]);
  assert.deepEqual([...map.read(0, 4)], [1, 1, 1, 0]);
  assert.throws(
    () =>
      map.markDirtySectors([{ offsetSectors: 24, countSectors: 8 }, {
        offsetSectors: 32,
        countSectors: 1,
      }]),
    (error) => isServiceError(error, "OUT_OF_RANGE"),
  );
  assert.equal(map.read(0, 4)[3], 0, "nothing marked when one range is out of range");
  assert.throws(
    () => map.markDirtySectors([{ offsetSectors: 0, countSectors: 0 }]),
    (error) => isServiceError(error, "INVALID_ARGUMENT"),
  );
  assert.equal(map.isCorrupted, false);
});

Deno.test("CbtMap.read() returns a copy of a range and refuses to go past the end", () => {
  const map = new CbtMap(4 * BLOCK, params);
  map.set(BLOCK, 1);
  map.switch();
  const part = map.read(1, 2);
  assert.deepEqual([...part], [1, 0]);
  part[0] = 99;
  assert.equal(map.read(1, 1)[0], 1);
  assert.deepEqual(map.read(4, 0), new Uint8Array(0));
  for (const [offset, length] of [[3, 2], [5, 0], [-1, 1], [0, 5]]) {
    assert.throws(() => map.read(offset, length), (error) => isServiceError(error, "OUT_OF_RANGE"));
  }
});

Deno.test("CbtMap sizing follows trackingBlockSizing at reset", () => {
  const map = new CbtMap(64 * BLOCK, params);
  assert.equal(map.blockShift, 12);
  map.reset(64 * BLOCK + 1);
  assert.equal(map.blockShift, 13);
  assert.equal(map.blockCount, 33);
});

Deno.test("CbtMap keeps its header and both tables in one SharedArrayBuffer", () => {
  const map = new CbtMap(4 * BLOCK, params);
  const buffer = map.buffer;
  assert.ok(buffer instanceof SharedArrayBuffer);
  assert.equal(buffer.byteLength, CBT_HEADER_BYTES + 2 * map.blockCount);
  const header = new Int32Array(buffer, 0, 4);
  const epoch = map.epoch;
  map.set(2 * BLOCK, 1);
  map.switch();
  assert.equal(header[CbtHeader.ACTIVE], 2);
  assert.equal(header[CbtHeader.PREVIOUS], 1);
  assert.equal(header[CbtHeader.EPOCH], epoch + 1);
  const tables = new Uint8Array(buffer, CBT_HEADER_BYTES);
  assert.deepEqual([...tables], [0, 0, 1, 0, 0, 0, 1, 0], "read table, then write table");
  assert.equal(map.mark(3 * BLOCK, 2 * BLOCK), false, "beyond the map: reported, not thrown");
  assert.equal(header[CbtHeader.CORRUPTED], 1);
  assert.equal(map.isCorrupted, true);
  map.reset(4 * BLOCK);
  assert.notEqual(map.buffer, buffer, "a reset lays out a new buffer");
  assert.equal(map.isCorrupted, false);
  assert.equal(map.epoch, epoch + 2);
});

Deno.test("CbtMap.markBoth() marks nothing and reports false beyond the map", () => {
  const map = new CbtMap(4 * BLOCK, params);
  map.switch();
  assert.equal(map.markBoth(3 * BLOCK, 2 * BLOCK), false);
  assert.equal(map.isCorrupted, false);
  assert.equal(map.markBoth(BLOCK, 1), true);
  assert.deepEqual([...map.read(0, 4)], [0, 1, 0, 0]);
});
