/**
 * A restarted userspace backend tracks the same devices again from its state
 * dir: same ids and paths, their exports served again with the data written
 * before the restart, and a new CBT generation (changes number 0), which
 * tells backup tools that the next backup must be full.
 */

import assert from "node:assert/strict";
import { Prng } from "../_helpers/prng.ts";
import { listExports, missingTools } from "./_helpers/nbd_tools.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";

const KiB = 1024;

Deno.test({
  name: "devices are re-attached after a restart from the state dir with a new CBT generation",
  ignore: missingTools("nbdinfo") !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "userspace-restart-" });
    try {
      const data = new Prng(3).bytes(64 * KiB);
      const first = await userspaceFixture({ dir, persist: true });
      let before: Map<string, { path: string; generationId: string }>;
      try {
        const a = await first.driver.attach(await first.createDevice(512 * KiB), { name: "a" });
        await first.driver.attach(await first.createDevice(256 * KiB), { name: "b" });
        await first.writeDevice(a, 128 * KiB, data);
        const snapshot = await first.driver.createSnapshot({
          deviceIds: ["a"],
          diffStorage: { path: `${dir}/diff`, limitBytes: 1 << 26 },
        });
        await first.driver.takeSnapshot(snapshot.id);
        before = new Map();
        for (const device of await first.driver.listDevices()) {
          const { generationId } = await first.driver.cbtInfo(device.id);
          before.set(device.id, { path: device.path, generationId });
        }
      } finally {
        await first.cleanup();
      }

      const second = await userspaceFixture({ dir, persist: true });
      try {
        const devices = await second.driver.listDevices();
        assert.deepEqual(
          devices.map((d) => [d.id, d.path]),
          [...before].map(([id, d]) => [id, d.path]),
        );
        for (const device of devices) {
          const info = await second.driver.cbtInfo(device.id);
          assert.notEqual(info.generationId, before.get(device.id)!.generationId, device.id);
          assert.equal(info.changesNumber, 0);
          assert.equal(device.snapshotId, undefined, "snapshots do not survive a restart");
        }
        assert.deepEqual(await second.driver.listSnapshots(), []);
        const port = second.driver.nbdServer.tcpPort!;
        const names = (await listExports(port)).map((e) => e["export-name"]).sort();
        assert.deepEqual(names, ["a", "b"]);
        const a = devices.find((d) => d.id === "a")!;
        const client = await second.connect(a.locator);
        assert.deepEqual(await client.pread(128 * KiB, data.length), data, "data survives");
        await client.pwrite(0, new Uint8Array(4 * KiB).fill(9));
        const snapshot = await second.driver.createSnapshot({
          deviceIds: ["a"],
          diffStorage: { path: `${dir}/diff2`, limitBytes: 1 << 26 },
        });
        await second.driver.takeSnapshot(snapshot.id);
        assert.deepEqual(
          [...await second.driver.readCbtMap("a", { offset: 0, length: 8 })],
          [1, 0, 0, 0, 0, 0, 0, 0],
          "tracking goes on after the restart",
        );
      } finally {
        await second.cleanup();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
