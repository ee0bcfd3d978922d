/**
 * Conformance cases: CBT info and sizing, the read map, CBT across takes, mark dirty.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  blocksAtLeast,
  blocksOf,
  expectedTracking,
  randomBytes,
  rejectsWith,
  SECTOR,
} from "../expect.ts";
import { attachNew, CaseList, type ConformanceCase, KiB, MiB, SMALL, takeNew } from "../steps.ts";

const cases = new CaseList();

cases.add(
  "cbtInfo() after attach: kernel sizing, a generation UUID, changes number 0",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const info = await fx.driver.cbtInfo(device.id);
    const expected = expectedTracking(SMALL);
    assert.equal(info.capacityBytes, SMALL);
    assert.equal(info.blockSizeBytes, expected.blockSize);
    assert.equal(info.blockCount, expected.blockCount);
    assert.equal(info.blockCount, 17);
    assert.match(
      info.generationId,
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
    assert.equal(info.changesNumber, 0);
    assert.deepEqual(
      await fx.driver.readCbtMap(device.id, { offset: 0, length: 17 }),
      new Uint8Array(17),
    );
  },
);

cases.add(
  "cbtInfo() of a device past 2,097,152 blocks of 64 KiB uses 128 KiB blocks",
  ["large-devices"],
  async (fx) => {
    const capacity = 128 * 1024 * MiB + 64 * KiB;
    const device = await attachNew(fx, capacity);
    const info = await fx.driver.cbtInfo(device.id);
    assert.equal(info.capacityBytes, capacity);
    assert.equal(info.blockSizeBytes, 128 * KiB);
    assert.equal(info.blockCount, 1_048_577);
    assert.deepEqual(expectedTracking(capacity), { blockSize: 128 * KiB, blockCount: 1_048_577 });
  },
);

cases.add(
  "the changes number is 1 after the first take and the generation stays",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const before = await fx.driver.cbtInfo(device.id);
    await takeNew(fx, [device]);
    const after = await fx.driver.cbtInfo(device.id);
    assert.equal(after.changesNumber, 1);
    assert.equal(after.generationId, before.generationId);
    assert.equal(after.blockCount, before.blockCount);
  },
);

cases.add(
  "readCbtMap() returns the requested range, OUT_OF_RANGE past the end",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const { blockCount } = await fx.driver.cbtInfo(device.id);
    assert.equal(
      (await fx.driver.readCbtMap(device.id, { offset: 0, length: blockCount })).length,
      17,
    );
    assert.equal((await fx.driver.readCbtMap(device.id, { offset: 5, length: 3 })).length, 3);
    assert.equal((await fx.driver.readCbtMap(device.id, { offset: 16, length: 1 })).length, 1);
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: 16, length: 2 }),
      "OUT_OF_RANGE",
      "a range crossing the end",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: 0, length: blockCount + 1 }),
      "OUT_OF_RANGE",
      "one block too many",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: blockCount + 4, length: 1 }),
      "OUT_OF_RANGE",
      "a range starting past the end",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: -1, length: 1 }),
      "INVALID_ARGUMENT",
      "a negative offset",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: 0, length: 1.5 }),
      "INVALID_ARGUMENT",
      "a fractional length",
    );
  },
);

cases.add("CBT across two takes covers exactly the written blocks", ["data"], async (fx) => {
  const device = await attachNew(fx, SMALL, randomBytes(SMALL, 11));
  const first = await takeNew(fx, [device]);
  const { blockSizeBytes, generationId } = await fx.driver.cbtInfo(device.id);
  const writes = [
    { offset: 64 * KiB + 8 * KiB, length: 4 * KiB }, // block 1
    { offset: 4 * 64 * KiB - 4 * KiB, length: 8 * KiB }, // blocks 3 and 4
    { offset: 10 * 64 * KiB, length: 64 * KiB }, // block 10, exactly
    { offset: MiB, length: 4 * KiB }, // block 16, the short last one
  ];
  await fx.writeDevice(device, writes[0].offset, randomBytes(writes[0].length, 1));
  await fx.writeDevice(device, writes[1].offset, randomBytes(writes[1].length, 2));
  await fx.driver.destroySnapshot(first.id);
  await fx.writeDevice(device, writes[2].offset, randomBytes(writes[2].length, 3));
  await fx.writeDevice(device, writes[3].offset, randomBytes(writes[3].length, 4));
  await takeNew(fx, [device]);
  const info = await fx.driver.cbtInfo(device.id);
  assert.equal(info.changesNumber, 2);
  assert.equal(info.generationId, generationId);
  const map = await fx.driver.readCbtMap(device.id, { offset: 0, length: info.blockCount });
  const written = [...new Set(writes.flatMap((w) => blocksOf(w.offset, w.length, blockSizeBytes)))];
  assert.deepEqual(written, [1, 3, 4, 10, 16]);
  assert.deepEqual(blocksAtLeast(map, info.changesNumber), written);
  assert.deepEqual(blocksAtLeast(map, 1), written, "no other block changed since attach");
});

cases.add("markDirty() ranges show in the map after the next take", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const first = await takeNew(fx, [device]);
  await fx.driver.destroySnapshot(first.id);
  const { generationId } = await fx.driver.cbtInfo(device.id);
  await fx.driver.markDirty(device.id, [
    { offsetSectors: 128, countSectors: 1 }, // block 1
    { offsetSectors: 7 * 128 - 1, countSectors: 2 }, // blocks 6 and 7
    { offsetSectors: 2048, countSectors: 8 }, // block 16, the last one
  ]);
  await takeNew(fx, [device]);
  const info = await fx.driver.cbtInfo(device.id);
  assert.equal(info.changesNumber, 2);
  assert.equal(info.generationId, generationId);
  const map = await fx.driver.readCbtMap(device.id, { offset: 0, length: info.blockCount });
  assert.deepEqual(blocksAtLeast(map, 2), [1, 6, 7, 16]);
  assert.deepEqual(blocksAtLeast(map, 1), [1, 6, 7, 16]);
});

cases.add("markDirty() past the end of the device is OUT_OF_RANGE", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const sectors = SMALL / SECTOR;
  await fx.driver.markDirty(device.id, [{ offsetSectors: sectors - 1, countSectors: 1 }]);
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: sectors - 1, countSectors: 2 }]),
    "OUT_OF_RANGE",
    "a range one sector past the capacity",
  );
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: 17 * 128, countSectors: 1 }]),
    "OUT_OF_RANGE",
    "a range past the last block",
  );
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: 0, countSectors: 0 }]),
    "INVALID_ARGUMENT",
    "an empty range",
  );
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: -8, countSectors: 8 }]),
    "INVALID_ARGUMENT",
    "a negative offset",
  );
});

/** The cases of this file. */
export const cbtCases: readonly ConformanceCase[] = cases.all;
