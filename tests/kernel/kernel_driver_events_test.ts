/**
 * Snapshot events through the driver: decoding of both event kinds, the
 * corrupted state, timeouts that hold even when the module sleeps longer
 * than asked (timeout_ms taken as jiffies), events that arrive after their
 * caller gave up, and a wait on a real worker thread (a gcc-built ioctl)
 * while the main thread keeps serving driver calls.
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { WorkerIoctl } from "../../src/kernel/blocking_ioctl.ts";
import { buildBlockingIoctlLib, hasGcc, WaitMode } from "../_helpers/blocking_ioctl_lib.ts";
import { kernelFixture } from "../_helpers/kernel_fixture.ts";

const gcc = hasGcc();
if (!gcc) console.log("skipping the worker-backed event test: gcc is not installed");

for (const profile of ["upstream", "outoftree"] as const) {
  Deno.test(`[${profile}] waitEvent decodes no_space and corrupted events`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const [vdb, vdc] = fx.devices;
      await driver.attach(vdb.path);
      await driver.attach(vdc.path);
      const { id } = await driver.createSnapshot({
        deviceIds: ["vdc", "vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await driver.takeSnapshot(id);
      const before = Date.now();
      fx.fake.noSpace(id, 2097152);
      const noSpace = await driver.waitEvent(id, 1000);
      assert.equal(noSpace?.code, "no_space");
      assert.equal(noSpace.code === "no_space" && noSpace.requestedSectors, 2097152);
      assert.ok(Math.abs(noSpace.timeMs - before) < 5000, "time converted to the epoch clock");
      const pending = driver.waitEvent(id, 5000);
      fx.fake.overflow(id);
      const corrupted = await pending;
      assert.deepEqual(corrupted && { ...corrupted, timeMs: 0 }, {
        code: "corrupted",
        timeMs: 0,
        deviceId: "vdc",
        errorCode: 28,
        errorName: "ENOSPC",
      });
      const info = await driver.snapshotInfo(id);
      assert.equal(info.state, "corrupted");
      assert.deepEqual(info.devices.map((d) => d.errorName), ["ENOSPC", "ENOSPC"]);
      await assert.rejects(
        driver.readImage(id, "vdb", 0, new Uint8Array(512)),
        (error) => isServiceError(error, "SNAPSHOT_CORRUPTED"),
      );
      assert.equal(await driver.waitEvent(id, 30), undefined);
      assert.deepEqual(await driver.stats(), { events: 2 });
    } finally {
      await fx.cleanup();
    }
  });
}

Deno.test("waitEvent keeps the caller's timeout when the module sleeps 4x longer, and keeps the late event", async () => {
  const fx = await kernelFixture("outoftree", { waitTimeoutScale: 4 });
  try {
    const driver = await fx.driver({ eventGraceMs: 20 });
    await driver.attach(fx.devices[0].path);
    const { id } = await driver.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
    });
    const waits = () => fx.fake.calls.filter((c) => c.request === 0x90005605).length;
    assert.equal(await driver.waitEvent(id, 100), undefined, "answered at the caller's deadline");
    assert.equal(waits(), 1);
    fx.fake.noSpace(id, 77);
    const late = await driver.waitEvent(id, 100);
    assert.equal(late?.code === "no_space" && late.requestedSectors, 77);
    assert.equal(waits(), 1, "the event came from the wait already in flight");
  } finally {
    await fx.cleanup();
  }
});

Deno.test("concurrent waiters share one kernel wait and each gets its own event", async () => {
  const fx = await kernelFixture("upstream");
  try {
    const driver = await fx.driver();
    await driver.attach(fx.devices[0].path);
    const { id } = await driver.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
    });
    const first = driver.waitEvent(id, 2000);
    const second = driver.waitEvent(id, 2000);
    fx.fake.noSpace(id, 1);
    fx.fake.noSpace(id, 2);
    const events = await Promise.all([first, second]);
    assert.deepEqual(events.map((e) => e?.code === "no_space" && e.requestedSectors), [1, 2]);
  } finally {
    await fx.cleanup();
  }
});

Deno.test("destroying a snapshot ends its pending waits with NOT_FOUND", async () => {
  const fx = await kernelFixture("outoftree");
  try {
    const driver = await fx.driver();
    await driver.attach(fx.devices[0].path);
    const { id } = await driver.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
    });
    const pending = assert.rejects(
      driver.waitEvent(id, 300),
      (error) => isServiceError(error, "NOT_FOUND"),
    );
    await new Promise((resolve) => setTimeout(resolve, 10));
    await driver.destroySnapshot(id);
    await pending;
    await assert.rejects(driver.waitEvent(id, 10), (error) => isServiceError(error, "NOT_FOUND"));
  } finally {
    await fx.cleanup();
  }
});

Deno.test({
  name: "a wait blocked on a worker thread leaves the main thread serving driver calls",
  ignore: !gcc,
  async fn() {
    const fx = await kernelFixture("outoftree");
    const lib = await buildBlockingIoctlLib(fx.dir);
    try {
      const driver = await fx.driver({
        blockingIoctl: new WorkerIoctl({ libraryPath: lib.path }),
      });
      await driver.attach(fx.devices[0].path);
      const { id } = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      lib.configure(WaitMode.timeout, 0, 0n);
      const order: string[] = [];
      const waiting = driver.waitEvent(id, 300).then((event) => {
        order.push(`wait answered ${event}`);
      });
      await new Promise((resolve) => setTimeout(resolve, 30));
      order.push("timer fired");
      const info = await driver.cbtInfo("vdb");
      order.push(`cbtInfo answered ${info.blockSizeBytes}`);
      order.push(`listDevices answered ${(await driver.listDevices()).length}`);
      await waiting;
      assert.deepEqual(order, [
        "timer fired",
        "cbtInfo answered 65536",
        "listDevices answered 1",
        "wait answered undefined",
      ]);
      assert.deepEqual([lib.lastFd()], fx.fake.fdsOn(`${fx.dir}/veeamblksnap`), "the control fd");
      lib.configure(WaitMode.corrupted, 10, (7n << 32n) | 1n);
      const event = await driver.waitEvent(id, 1000);
      assert.equal(event?.code, "corrupted");
      assert.equal(event?.code === "corrupted" && event.deviceId, "vdb");
      assert.equal(event?.code === "corrupted" && event.errorName, "ENOSPC");
      assert.ok(Math.abs(event!.timeMs - Date.now()) < 5000);
      await driver.close();
    } finally {
      lib.close();
      await fx.cleanup();
    }
  },
});
