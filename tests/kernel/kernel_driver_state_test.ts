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
      const first = await fx.driver({ stateDir });
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
      const first = await fx.driver({ stateDir });
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
      const second = await fx.driver();
      const first = await fx.driver();
      await first.attach(fx.devices[0].path);
      const generation = (await first.cbtInfo("vdb")).generationId;
      await first.close();
      assert.ok(fx.fake.isTracked(fx.devices[0].path), "close() leaves devices attached");
      const adopted = await second.attach(fx.devices[0].path, { name: "again" });
      assert.equal(adopted.id, "again");
      assert.equal((await second.cbtInfo("again")).generationId, generation, "CBT kept");
      const third = await fx.driver();
      assert.deepEqual((await third.listDevices()).map((d) => d.id), ["vdb"], "adopted at start");
      assert.equal((await third.cbtInfo("vdb")).generationId, generation, "CBT kept");
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] snapshots made outside the driver are adopted`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const other = await fx.driver();
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

  Deno.test(`[${profile}] a restart without the state file re-adopts trackers and the snapshot`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const stateDir = `${fx.dir}/state`;
      const first = await fx.driver({ stateDir });
      await first.attach(fx.devices[0].path);
      await first.attach(fx.devices[1].path);
      const { id } = await first.createSnapshot({
        deviceIds: ["vdb", "vdc"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await first.takeSnapshot(id);
      const generation = (await first.cbtInfo("vdb")).generationId;
      await first.close();
      assert.deepEqual(fx.fake.snapshotIds(), [id], "a clean stop keeps the snapshot");
      await Deno.remove(`${stateDir}/${STATE_FILE_NAME}`);

      const second = await fx.driver({ stateDir });
      assert.deepEqual((await second.listDevices()).map((d) => [d.id, d.path, d.snapshotId]), [
        ["vdb", fx.devices[0].path, id],
        ["vdc", fx.devices[1].path, id],
      ]);
      assert.equal((await second.cbtInfo("vdb")).generationId, generation);
      const info = await second.snapshotInfo(id);
      assert.equal(info.state, "taken", "taken: SNAPSHOTINFO shows an image");
      assert.deepEqual(info.devices.map((d) => d.deviceId), ["vdb", "vdc"]);
      const bytes = new Uint8Array(4096);
      await second.readImage(id, "vdc", 0, bytes);
      assert.deepEqual(bytes, fx.devices[1].content.subarray(0, 4096));
      await second.close();
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] a device whose path is no longer allowed is listed as refused`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const stateDir = `${fx.dir}/state`;
      const first = await fx.driver({ stateDir });
      await first.attach(fx.devices[0].path);
      await first.attach(fx.devices[1].path);
      await first.close();
      const refusing = (path: string) =>
        path === fx.devices[1].path
          ? Promise.reject(new Error(`${path} is outside the allowed prefixes`))
          : Promise.resolve();
      const second = await fx.driver({ stateDir, checkPath: refusing });
      assert.deepEqual((await second.listDevices()).map((d) => [d.id, d.state]), [
        ["vdb", undefined],
        ["vdc", "refused"],
      ]);
      assert.match((await second.getDevice("vdc")).error!, /outside the allowed prefixes/);
      await assert.rejects(second.cbtInfo("vdc"), (e) => isServiceError(e, "UNAVAILABLE"));
      await second.cbtInfo("vdb");
      assert.ok(fx.fake.isTracked(fx.devices[1].path), "the module keeps tracking it");
      await second.close();
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] a second driver on the same state folder or host lock is refused`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const stateDir = `${fx.dir}/state`;
      const hostLockPath = `${fx.dir}/host.lock`;
      const first = await fx.driver({ stateDir, hostLockPath });
      for (const options of [{ stateDir }, { hostLockPath }]) {
        await assert.rejects(fx.driver(options), (error) => {
          assert.ok(isServiceError(error, "CONFLICT"), String(error));
          assert.match(error.message, new RegExp(`pid ${Deno.pid}`));
          return true;
        });
      }
      await first.close();
      const again = await fx.driver({ stateDir, hostLockPath });
      await again.close();
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] close() keeps snapshots; destroySnapshotsOnClose destroys its own`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const keeper = await fx.driver();
      await keeper.attach(fx.devices[1].path);
      const kept = await keeper.createSnapshot({
        deviceIds: ["vdc"],
        diffStorage: { path: `${fx.dir}/diff-kept`, limitBytes: 1 << 30 },
      });
      await keeper.takeSnapshot(kept.id);
      await keeper.close();
      assert.deepEqual(fx.fake.snapshotIds(), [kept.id]);
      const adopter = await fx.driver();
      await adopter.destroySnapshot(kept.id);
      await adopter.close();
      const driver = await fx.driver({ destroySnapshotsOnClose: true });
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
