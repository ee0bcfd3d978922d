/**
 * CbtMap's persistence surface: the observer sees exactly the entries that
 * rose (so blocks marked already cost a record nothing), switches, resets
 * and corruption; exportState / restoreState carry a map across a restart,
 * clamping entries above the numbers so that they still count as changed.
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { CbtMap, type CbtMapObserver } from "../../src/engine/cbt_map.ts";
import { resolveEngineParams } from "../../src/engine/params.ts";

const params = resolveEngineParams({
  trackingBlockMinimumShift: 12,
  trackingBlockMaximumShift: 16,
  trackingBlockMaximumCount: 64,
});
const BLOCK = 4096;

function recorder(): { events: string[]; observer: CbtMapObserver } {
  const events: string[] = [];
  return {
    events,
    observer: {
      marked: (table, first, last) => events.push(`${table} ${first}-${last}`),
      switched: (kind) => events.push(kind),
      reset: () => events.push("reset"),
      corrupted: () => events.push("corrupted"),
    },
  };
}

Deno.test("CbtMap tells its observer only the entries that rose", () => {
  const map = new CbtMap(16 * BLOCK, params);
  const { events, observer } = recorder();
  map.observe(observer);
  map.set(2 * BLOCK, 3 * BLOCK);
  map.set(3 * BLOCK, 10);
  map.set(BLOCK, 5 * BLOCK);
  assert.deepEqual(events, ["write 2-4", "write 1-5"], "a second mark of 3 is silent");
  events.length = 0;
  map.switch();
  map.set(3 * BLOCK, 10);
  map.setBoth(8 * BLOCK, BLOCK);
  map.setBoth(8 * BLOCK, BLOCK);
  assert.deepEqual(events, ["switch", "write 3-3", "write 8-8", "read 8-8"]);
  events.length = 0;
  assert.throws(() => map.set(15 * BLOCK, 2 * BLOCK));
  map.reset(8 * BLOCK);
  assert.deepEqual(events, ["write 15-15", "corrupted", "reset"]);
  map.observe(undefined);
  map.set(0, 1);
  assert.equal(events.length, 3);
});

Deno.test("CbtMap reports a wrap at 255 to its observer", () => {
  const map = new CbtMap(4 * BLOCK, params);
  for (let i = 1; i < 255; i++) map.switch();
  const { events, observer } = recorder();
  map.observe(observer);
  map.switch();
  assert.deepEqual(events, ["wrap"]);
  assert.equal(map.activeNumber, 1);
});

Deno.test("CbtMap.restoreState brings back the whole map, clamping entries above the numbers", () => {
  const map = new CbtMap(8 * BLOCK, params);
  map.set(0, BLOCK);
  map.switch();
  map.set(2 * BLOCK, BLOCK);
  const state = map.exportState();
  const copy = {
    ...state,
    writeTable: state.writeTable.slice(),
    readTable: state.readTable.slice(),
  };
  copy.writeTable[5] = 200;
  copy.readTable[6] = 200;
  const restored = new CbtMap(8 * BLOCK, params);
  restored.restoreState(copy);
  assert.equal(restored.generationId, map.generationId);
  assert.deepEqual([restored.previousNumber, restored.activeNumber], [1, 2]);
  assert.deepEqual([...restored.read(0, 8)], [1, 0, 0, 0, 0, 0, 1, 0]);
  restored.switch();
  assert.deepEqual([...restored.read(0, 8)], [1, 0, 2, 0, 0, 2, 0, 0]);
  copy.writeTable[5] = 0;
  assert.equal(map.exportState().writeTable[5], 0, "the restored map holds copies");
});

Deno.test("CbtMap.restoreState refuses a state whose sizing does not fit", () => {
  const map = new CbtMap(8 * BLOCK, params);
  const state = map.exportState();
  for (
    const bad of [
      { ...state, blockCount: 9 },
      { ...state, capacityBytes: 64 * BLOCK },
      { ...state, activeNumber: 0 },
      { ...state, previousNumber: 256 },
      { ...state, writeTable: new Uint8Array(3) },
    ]
  ) {
    assert.throws(() => map.restoreState(bad), (e) => isServiceError(e, "INVALID_ARGUMENT"));
  }
});
