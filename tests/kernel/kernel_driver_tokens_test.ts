/**
 * Change tokens and events of the kernel backend across a service restart
 * and a module reload, on the fake kernel: an adopted snapshot has the token
 * it was taken with (CBTINFO while the device is in it) and its events are
 * read again by one reader; after a module reload, tokens from before answer
 * FULL_BACKUP_REQUIRED (generation_changed).
 */

import assert from "node:assert/strict";
import { readChanges } from "../../src/api/changes.ts";
import { isServiceError } from "../../src/errors.ts";
import { kernelFixture } from "../_helpers/kernel_fixture.ts";

const limit = { limitBytes: 1 << 30 };

Deno.test("a restarted driver gives an adopted snapshot the token it was taken with", async () => {
  const fx = await kernelFixture("outoftree");
  try {
    const stateDir = `${fx.dir}/state`;
    const first = await fx.driver({ stateDir });
    await first.attach(fx.devices[0].path);
    const earlier = await first.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff1`, ...limit },
    });
    await first.takeSnapshot(earlier.id);
    await first.destroySnapshot(earlier.id);
    const { id } = await first.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff2`, ...limit },
    });
    const [before] = (await first.takeSnapshot(id)).devices;
    await first.close();

    const second = await fx.driver({ stateDir });
    const [adopted] = (await second.snapshotInfo(id)).devices;
    assert.equal(adopted.changeToken, before.changeToken);
    assert.equal(adopted.previousChangeToken, before.previousChangeToken);
    fx.fake.writeDevice(fx.devices[0].path, 0, new Uint8Array(512).fill(1));
    const changes = await readChanges(second, adopted);
    assert.deepEqual(changes.extents, [], "no write between the two takes");
    fx.fake.noSpace(id, 8);
    const page = await second.waitEvents(id, { timeoutMs: 5000 });
    assert.deepEqual(page.events.map((e) => e.code), ["no_space"], "the adopted snapshot's reader");
  } finally {
    await fx.cleanup();
  }
});

Deno.test("after a module reload, tokens from before answer generation_changed", async () => {
  const fx = await kernelFixture("upstream");
  try {
    const driver = await fx.driver();
    await driver.attach(fx.devices[0].path);
    const old = await driver.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff1`, ...limit },
    });
    const [kept] = (await driver.takeSnapshot(old.id)).devices;
    fx.fake.reload();
    assert.deepEqual(await driver.listSnapshots(), [], "the module's snapshots are gone");
    await driver.detach("vdb"); // the module forgot the tracker: the driver forgets the device
    await driver.attach(fx.devices[0].path);
    const fresh = await driver.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff2`, ...limit },
    });
    const [image] = (await driver.takeSnapshot(fresh.id)).devices;
    await assert.rejects(
      readChanges(driver, image, { since: kept.changeToken }),
      (e) => isServiceError(e, "FULL_BACKUP_REQUIRED") && e.reason === "generation_changed",
    );
  } finally {
    await fx.cleanup();
  }
});
