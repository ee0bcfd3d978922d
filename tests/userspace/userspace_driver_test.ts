/**
 * UserspaceDriver behaviour beyond the conformance suite: what close() does
 * to a pending event wait (UNAVAILABLE, as the kernel backend's close does),
 * and the NBD locators it hands out.
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";

Deno.test("a waitEvents() pending when the driver closes is UNAVAILABLE", async () => {
  const fx = await userspaceFixture();
  try {
    const device = await fx.driver.attach(await fx.createDevice(1 << 20), { name: "disk" });
    const created = await fx.driver.createSnapshot({
      deviceIds: [device.id],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 26 },
    });
    await fx.driver.takeSnapshot(created.id);
    const waiting = fx.driver.waitEvents(created.id, { timeoutMs: 10_000 }).then(
      (page) => ({ page }),
      (error) => ({ error }),
    );
    await fx.driver.close();
    const outcome = await waiting;
    assert.ok("error" in outcome, `resolved with ${JSON.stringify(outcome)}`);
    assert.ok(isServiceError(outcome.error, "UNAVAILABLE"), `${outcome.error}`);
  } finally {
    await fx.cleanup();
  }
});

Deno.test("locators are nbd:// URIs of the device and image exports on the TCP listener", async () => {
  const fx = await userspaceFixture();
  try {
    const port = fx.driver.nbdServer.tcpPort;
    const device = await fx.driver.attach(await fx.createDevice(1 << 20), { name: "disk" });
    assert.equal(device.locator, `nbd://127.0.0.1:${port}/disk`);
    const created = await fx.driver.createSnapshot({
      deviceIds: [device.id],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 26 },
    });
    const taken = await fx.driver.takeSnapshot(created.id);
    assert.equal(taken.devices[0].locator, `nbd://127.0.0.1:${port}/disk@${created.id}`);
  } finally {
    await fx.cleanup();
  }
});
