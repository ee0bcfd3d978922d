/**
 * `nbdinfo --map` on the userspace backend's exports, for each metadata
 * context, with exact extents: base:allocation, qemu:dirty-bitmap:cbt (dirty
 * = changed since the previous snapshot) and blksnap:change-number (flags =
 * the read table's change number), on device and image exports alike; and
 * QEMU's own client reading the dirty bitmap (`qemu-img map` with
 * x-dirty-bitmap).
 *
 * The device has 9 tracking blocks of 64 KiB, the last one 4 KiB long. Block
 * 2 is written before the first take (change number 1); blocks 4-5 while the
 * first snapshot lives and block 8 after it is destroyed (change number 2);
 * then the second snapshot is taken (changes number 2).
 */

import assert from "node:assert/strict";
import type { DeviceInfo } from "../../src/driver.ts";
import { Prng } from "../_helpers/prng.ts";
import {
  type MapExtent,
  mapExtents,
  missingTools,
  runToolOk,
  uriParts,
} from "./_helpers/nbd_tools.ts";
import { type UserspaceFixture, userspaceFixture } from "./_helpers/userspace_fixture.ts";

const KiB = 1024;
const BLOCK = 64 * KiB;
const SIZE = 8 * BLOCK + 4 * KiB;
const DIRTY = "qemu:dirty-bitmap:cbt";
const CHANGES = "blksnap:change-number";
const ignore = missingTools("nbdinfo");

function extents(...runs: [number, number][]): MapExtent[] {
  const out: MapExtent[] = [];
  let offset = 0;
  for (const [length, type] of runs) {
    out.push({ offset, length, type });
    offset += length;
  }
  return out;
}

interface Scenario {
  fx: UserspaceFixture;
  device: DeviceInfo;
  imageUri: string;
}

async function twoTakes(): Promise<Scenario> {
  const fx = await userspaceFixture();
  try {
    const random = new Prng(7);
    const { driver } = fx;
    const device = await driver.attach(
      await fx.createDevice(SIZE, { content: random.bytes(SIZE) }),
      { name: "disk" },
    );
    const storage = (name: string) => ({ path: `${fx.dir}/${name}`, limitBytes: 1 << 26 });
    await fx.writeDevice(device, 2 * BLOCK + 8 * KiB, random.bytes(4 * KiB));
    const first = await driver.createSnapshot({ deviceIds: ["disk"], diffStorage: storage("1") });
    await driver.takeSnapshot(first.id);
    await fx.writeDevice(device, 5 * BLOCK - 4 * KiB, random.bytes(8 * KiB));
    await driver.destroySnapshot(first.id);
    await fx.writeDevice(device, 8 * BLOCK, random.bytes(4 * KiB));
    const second = await driver.createSnapshot({ deviceIds: ["disk"], diffStorage: storage("2") });
    const taken = await driver.takeSnapshot(second.id);
    return { fx, device, imageUri: taken.devices[0].locator! };
  } catch (error) {
    await fx.cleanup();
    throw error;
  }
}

async function withTwoTakes(body: (scenario: Scenario) => Promise<void>): Promise<void> {
  const scenario = await twoTakes();
  try {
    await body(scenario);
  } finally {
    await scenario.fx.cleanup();
  }
}

Deno.test({
  name:
    "nbdinfo --map: before any take the CBT contexts map the device as one extent, base:allocation its holes",
  ignore: ignore !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const device = await fx.driver.attach(await fx.createDevice(SIZE));
      await fx.writeDevice(device, BLOCK, new Uint8Array(4 * KiB).fill(1));
      for (const context of [DIRTY, CHANGES]) {
        assert.deepEqual(await mapExtents(device.locator, context), extents([SIZE, 0]), context);
      }
      assert.deepEqual(
        await mapExtents(device.locator, "base:allocation"),
        extents([BLOCK, 3], [4 * KiB, 0], [SIZE - BLOCK - 4 * KiB, 3]),
        "base:allocation: the sparse file's holes read as zeroes",
      );
    } finally {
      await fx.cleanup();
    }
  },
});

Deno.test({
  name:
    "nbdinfo --map: after a second take the dirty bitmap covers exactly the blocks written since the first",
  ignore: ignore !== undefined,
  async fn() {
    await withTwoTakes(async ({ device, imageUri }) => {
      const expected = extents([4 * BLOCK, 0], [2 * BLOCK, 1], [2 * BLOCK, 0], [4 * KiB, 1]);
      assert.deepEqual(await mapExtents(device.locator, DIRTY), expected, "device export");
      assert.deepEqual(await mapExtents(imageUri, DIRTY), expected, "image export");
    });
  },
});

Deno.test({
  name: "nbdinfo --map: the change-number context carries each block's change number",
  ignore: ignore !== undefined,
  async fn() {
    await withTwoTakes(async ({ fx, device, imageUri }) => {
      const expected = extents(
        [2 * BLOCK, 0],
        [BLOCK, 1],
        [BLOCK, 0],
        [2 * BLOCK, 2],
        [2 * BLOCK, 0],
        [4 * KiB, 2],
      );
      assert.deepEqual(await mapExtents(device.locator, CHANGES), expected, "device export");
      assert.deepEqual(await mapExtents(imageUri, CHANGES), expected, "image export");
      const map = await fx.driver.readCbtMap("disk", { offset: 0, length: 9 });
      assert.deepEqual([...map], [0, 0, 1, 0, 2, 2, 0, 0, 2], "the same numbers as readCbtMap");
      assert.equal((await fx.driver.cbtInfo("disk")).changesNumber, 2);
    });
  },
});

Deno.test({
  name: "nbdinfo --map: base:allocation maps device and image exports as allocated data",
  ignore: ignore !== undefined,
  async fn() {
    await withTwoTakes(async ({ device, imageUri }) => {
      for (const uri of [device.locator, imageUri]) {
        assert.deepEqual(await mapExtents(uri, "base:allocation"), extents([SIZE, 0]), uri);
      }
    });
  },
});

Deno.test({
  name: "qemu-img map reads the dirty bitmap through QEMU's x-dirty-bitmap option",
  ignore: missingTools("qemu-img") !== undefined,
  async fn() {
    await withTwoTakes(async ({ imageUri }) => {
      const { host, port, name } = uriParts(imageUri);
      const output = await runToolOk("qemu-img", [
        "map",
        "--output=json",
        "--image-opts",
        `driver=nbd,server.type=inet,server.host=${host},server.port=${port},export=${name},` +
        `x-dirty-bitmap=${DIRTY}`,
      ]);
      // x-dirty-bitmap reads the context in place of base:allocation: the dirty flag (1) lands
      // where NBD_STATE_HOLE would, so dirty extents show as "data": false.
      const dirty = (JSON.parse(output) as { start: number; length: number; data: boolean }[])
        .filter((entry) => !entry.data)
        .map((entry) => [entry.start, entry.length]);
      assert.deepEqual(dirty, [[4 * BLOCK, 2 * BLOCK], [8 * BLOCK, 4 * KiB]]);
    });
  },
});
