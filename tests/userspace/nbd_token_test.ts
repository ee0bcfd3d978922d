/**
 * Checking the CBT over NBD before trusting it, with real clients: an image
 * export names its change token and the token its `qemu:dirty-bitmap:cbt`
 * is relative to as metadata contexts (`nbdinfo --json` lists them, nbdsh
 * queries them with NBD_OPT_LIST_META_CONTEXT) and in its description. The
 * README's recipes run here as written: the dirty bitmap of an image whose
 * previous token is the one kept from the last backup equals the API's
 * changes; with any other kept token, or once the device's CBT is no longer
 * the one the image was taken with, the recipe says "full backup".
 */

import assert from "node:assert/strict";
import { readChanges } from "../../src/api/changes.ts";
import type { DeviceInfo, SnapshotImageInfo } from "../../src/driver.ts";
import { dirtyRanges, runRecipe } from "../_helpers/token_recipes.ts";
import { missingTools, runTool } from "./_helpers/nbd_tools.ts";
import { type UserspaceFixture, userspaceFixture } from "./_helpers/userspace_fixture.ts";

const KiB = 1024;
const BLOCK = 64 * KiB;
const ignore = missingTools("nbdinfo", "nbdsh");

async function twoSnapshots(fx: UserspaceFixture) {
  const { driver } = fx;
  const device: DeviceInfo = await driver.attach(await fx.createDevice(8 * BLOCK), {
    name: "disk",
  });
  const storage = () => ({ path: `${fx.dir}/${crypto.randomUUID()}`, limitBytes: 1 << 26 });
  const first = await driver.createSnapshot({ deviceIds: ["disk"], diffStorage: storage() });
  const [kept] = (await driver.takeSnapshot(first.id)).devices;
  await driver.destroySnapshot(first.id);
  for (const block of [1, 2, 6]) {
    await fx.writeDevice(device, block * BLOCK + 100, new Uint8Array(512).fill(block));
  }
  const second = await driver.createSnapshot({ deviceIds: ["disk"], diffStorage: storage() });
  const taken = await driver.takeSnapshot(second.id);
  const image: SnapshotImageInfo = taken.devices[0];
  return { kept: kept.changeToken!, image, imageUri: image.locator! };
}

Deno.test({
  name: "an image names its change tokens over NBD: contexts and description",
  ignore: ignore !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const { kept, image, imageUri } = await twoSnapshots(fx);
      const info = await runTool("nbdinfo", ["--json", imageUri]);
      assert.equal(info.code, 0, info.stderr);
      const [listed] = JSON.parse(info.stdout).exports;
      assert.deepEqual(listed.contexts, [
        "base:allocation",
        "qemu:dirty-bitmap:cbt",
        "blksnap:change-number",
        `blksnap:change-token:${image.changeToken}`,
        `blksnap:previous-change-token:${kept}`,
      ]);
      assert.match(listed.description, new RegExp(`; change token ${image.changeToken};`));
      assert.match(listed.description, new RegExp(`dirty bitmap since change token ${kept}$`));
    } finally {
      await fx.cleanup();
    }
  },
});

for (const tool of ["nbdinfo", "nbdsh"] as const) {
  Deno.test({
    name: `README recipe (${tool}): the dirty bitmap is trusted only for the kept token`,
    ignore: ignore !== undefined,
    async fn() {
      const fx = await userspaceFixture();
      try {
        const { kept, image, imageUri } = await twoSnapshots(fx);
        const run = (env: Record<string, string>) => runRecipe(tool, env);
        const changes = await readChanges(fx.driver, image, { since: kept });
        const expected = changes.extents.map((e) => `${e.offset} ${e.length}`).join("\n");
        assert.equal(expected, `${BLOCK} ${2 * BLOCK}\n${6 * BLOCK} ${BLOCK}`, "blocks 1-2 and 6");
        const trusted = await run({ IMAGE: imageUri, KEPT: kept });
        assert.equal(dirtyRanges(tool, trusted), expected);
        const stranger = await run({ IMAGE: imageUri, KEPT: image.changeToken! });
        assert.equal(stranger.trim(), "full backup required", "a token it is not relative to");
        // The device's CBT is no longer the one the image was taken with (a restart that lost it).
        fx.driver.engine.tracker("disk").cbt.reset(8 * BLOCK);
        const lost = await run({ IMAGE: imageUri, KEPT: kept });
        assert.equal(lost.trim(), "full backup required", "a CBT that is not the image's");
      } finally {
        await fx.cleanup();
      }
    },
  });
}
