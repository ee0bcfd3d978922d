/**
 * The userspace backend's export list follows the engine: a device detached
 * and attached again under the same name (with no handshake in between) is
 * served by its new tracker, so NBD writes reach the new device and are
 * tracked there.
 */

import assert from "node:assert/strict";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";

const SIZE = 1 << 20;

Deno.test("a device attached again under the same name is served by its new tracker", async () => {
  const fx = await userspaceFixture();
  try {
    const first = await fx.createDevice(SIZE);
    const second = await fx.createDevice(SIZE);
    const old = await fx.driver.attach(first, { name: "disk" });
    const before = await fx.connect(old.locator);
    await before.pwrite(0, new Uint8Array(4096).fill(1));
    await before.close();
    await fx.driver.detach("disk");

    const now = await fx.driver.attach(second, { name: "disk" });
    assert.equal(now.locator, old.locator);
    const after = await fx.connect(now.locator);
    await after.pwrite(3 * 65536, new Uint8Array(4096).fill(2));
    assert.equal((await Deno.readFile(second))[3 * 65536], 2, "the write reached the new device");
    assert.equal((await Deno.readFile(first))[3 * 65536], 0, "and not the old one");

    const snapshot = await fx.driver.createSnapshot({
      deviceIds: ["disk"],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 26 },
    });
    await fx.driver.takeSnapshot(snapshot.id);
    const map = await fx.driver.readCbtMap("disk", { offset: 0, length: 16 });
    assert.deepEqual([...map].map((n, block) => n ? block : -1).filter((b) => b >= 0), [3]);
  } finally {
    await fx.cleanup();
  }
});
