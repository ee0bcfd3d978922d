/**
 * What survives a service restart: the module keeps trackers and snapshots,
 * the driver keeps its records in stateDir and checks them against the
 * module when it starts again; and what close() releases.
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { STATE_FILE_NAME } from "../../src/kernel/state_file.ts";
import { kernelFixture } from "../_helpers/kernel_fixture.ts";

for (const profile of ["upstream", "outoftree"] as const) {
  Deno.test(`[${profile}] a restarted driver finds its devices and snapshots again`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const stateDir = `${fx.dir}/state`;
      const first = await fx.driver({ stateDir, keepSnapshotsOnClose: true });
      await first.attach(fx.devices[0].path);
      await first.attach(fx.devices[1].path, { name: "data" });
      const { id } = await first.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
        writable: true,
      });
      await first.takeSnapshot(id);
      const generation = (await first.cbtInfo("vdb")).generationId;
      await first.close();
      assert.deepEqual(fx.fake.snapshotIds(), [id], "the snapshot outlived the service");

      const second = await fx.driver({ stateDir });
      assert.deepEqual((await second.listDevices()).map((d) => [d.id, d.snapshotId]), [
        ["vdb", id],
        ["data", undefined],
      ]);
      const info = await second.snapshotInfo(id);
      assert.equal(info.state, "taken");
      assert.equal(info.writable, true);
      assert.deepEqual(info.devices.map((d) => d.deviceId), ["vdb"]);
      assert.equal((await second.cbtInfo("vdb")).generationId, generation);
      const bytes = new Uint8Array(4096);
      await second.readImage(id, "vdb", 0, bytes);
      assert.deepEqual(bytes, fx.devices[0].content.subarray(0, 4096));
      await second.close();
      assert.deepEqual(fx.fake.snapshotIds(), [id], "close() keeps what it did not create");
      assert.equal(fx.fake.openFds, 0);
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] records the module no longer has are dropped at start`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const stateDir = `${fx.dir}/state`;
      const first = await fx.driver({ stateDir, keepSnapshotsOnClose: true });
      await first.attach(fx.devices[0].path);
      await first.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await first.close();
      fx.fake.reload();
      const second = await fx.driver({ stateDir });
      assert.deepEqual(await second.listDevices(), []);
      assert.deepEqual(await second.listSnapshots(), []);
      await second.flushState();
      const saved = JSON.parse(await Deno.readTextFile(`${stateDir}/${STATE_FILE_NAME}`));
      assert.deepEqual([saved.devices, saved.snapshots], [[], []]);
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] attach adopts a device the module already tracks`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const first = await fx.driver();
      await first.attach(fx.devices[0].path);
      const generation = (await first.cbtInfo("vdb")).generationId;
      await first.close();
      assert.ok(fx.fake.isTracked(fx.devices[0].path), "close() leaves devices attached");
      const second = await fx.driver();
      const adopted = await second.attach(fx.devices[0].path, { name: "again" });
      assert.equal(adopted.id, "again");
      assert.equal((await second.cbtInfo("again")).generationId, generation, "CBT kept");
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] snapshots made outside the driver are adopted`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const other = await fx.driver({ keepSnapshotsOnClose: true });
      const { id } = await other.createSnapshot({
        deviceIds: [],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await other.close();
      const driver = await fx.driver();
      const info = await driver.snapshotInfo(id.toUpperCase());
      assert.deepEqual([info.id, info.state, info.devices], [id, "created", []]);
      await driver.close();
      assert.deepEqual(fx.fake.snapshotIds(), [id], "adopted snapshots survive close()");
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] close() destroys the snapshots it created and closes every fd`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      await driver.attach(fx.devices[0].path);
      const { id } = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await driver.takeSnapshot(id);
      await driver.readImage(id, "vdb", 0, new Uint8Array(512));
      const waiting = assert.rejects(
        driver.waitEvents(id, { timeoutMs: 5000 }),
        (error) => isServiceError(error),
      );
      await new Promise((resolve) => setTimeout(resolve, 10));
      await driver.close();
      await waiting;
      assert.deepEqual(fx.fake.snapshotIds(), []);
      assert.ok(fx.fake.isTracked(fx.devices[0].path));
      assert.equal(fx.fake.openFds, 0);
      await assert.rejects(driver.listDevices(), (error) => isServiceError(error, "UNAVAILABLE"));
      await driver.close();
    } finally {
      await fx.cleanup();
    }
  });
}

Deno.test("a state file that is not JSON stops the start with a clear error", async () => {
  const fx = await kernelFixture("outoftree");
  try {
    const stateDir = `${fx.dir}/state`;
    await Deno.mkdir(stateDir);
    await Deno.writeTextFile(`${stateDir}/${STATE_FILE_NAME}`, "{ not json");
    await assert.rejects(fx.driver({ stateDir }), (error) => {
      assert.ok(isServiceError(error, "INTERNAL"));
      assert.match(error.message, /not valid JSON/);
      return true;
    });
    assert.equal(fx.fake.openFds, 0);
  } finally {
    await fx.cleanup();
  }
});

Deno.test("a state file that cannot be written fails flushState, not the driver", async () => {
  const fx = await kernelFixture("upstream");
  try {
    const stateDir = `${fx.dir}/state`;
    const driver = await fx.driver({ stateDir });
    await driver.attach(fx.devices[0].path);
    await driver.flushState();
    await Deno.remove(stateDir, { recursive: true });
    await Deno.writeTextFile(stateDir, "a file where the state dir was");
    await driver.attach(fx.devices[1].path);
    await assert.rejects(driver.flushState(), (error) => isServiceError(error, "IO"));
    assert.deepEqual((await driver.listDevices()).map((d) => d.id), ["vdb", "vdc"]);
  } finally {
    await fx.cleanup();
  }
});
