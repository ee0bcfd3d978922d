/**
 * Snapshot events through the driver: one internal reader per snapshot drains
 * the module's queue into the snapshot's event log, which every consumer
 * reads after an id. Decoding of both event kinds, the corrupted state,
 * timeouts that hold even when the module sleeps longer than asked
 * (timeout_ms taken as jiffies), every event to every consumer, and a wait
 * on a real worker thread (a gcc-built ioctl) while the main thread keeps
 * serving driver calls.
 */

import assert from "node:assert/strict";
import type { KernelDriver } from "../../src/kernel/kernel_driver.ts";
import type { LoggedEvent } from "../../src/driver.ts";
import { isServiceError } from "../../src/errors.ts";
import { WorkerIoctl } from "../../src/kernel/blocking_ioctl.ts";
import { buildBlockingIoctlLib, hasGcc, WaitMode } from "../_helpers/blocking_ioctl_lib.ts";
import { kernelFixture } from "../_helpers/kernel_fixture.ts";

const gcc = hasGcc();
if (!gcc) console.log("skipping the worker-backed event test: gcc is not installed");

const WAIT_EVENT = 0x90005605;

/** Reads the log after `after` until `count` events came (at most `timeoutMs` in all). */
async function collect(
  driver: KernelDriver,
  id: string,
  options: { count: number; after?: number; timeoutMs?: number },
): Promise<LoggedEvent[]> {
  const events: LoggedEvent[] = [];
  let after = options.after ?? 0;
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  while (events.length < options.count && Date.now() < deadline) {
    const page = await driver.waitEvents(id, { after, timeoutMs: 500 });
    events.push(...page.events);
    after = page.lastId;
  }
  return events;
}

for (const profile of ["upstream", "outoftree"] as const) {
  Deno.test(`[${profile}] waitEvents decodes no_space and corrupted events into the log`, async () => {
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
      const [noSpace] = await collect(driver, id, { count: 1 });
      assert.equal(noSpace?.code, "no_space");
      assert.equal(noSpace.code === "no_space" && noSpace.requestedSectors, 2097152);
      assert.ok(Math.abs(noSpace.timeMs - before) < 5000, "time converted to the epoch clock");
      const pending = driver.waitEvents(id, { after: noSpace.id, timeoutMs: 5000 });
      fx.fake.overflow(id);
      const [corrupted] = (await pending).events;
      assert.deepEqual({ ...corrupted, timeMs: 0 }, {
        id: noSpace.id + 1,
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
      const after = await driver.waitEvents(id, { after: corrupted.id, timeoutMs: 30 });
      assert.deepEqual(after.events, []);
      assert.deepEqual(await driver.stats(), { events: 2 });
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] the one reader gives each module event to every consumer`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver({ eventSliceMs: 50 });
      await driver.attach(fx.devices[0].path);
      const { id } = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await driver.takeSnapshot(id);
      const consumers = [1, 2, 3].map(() => collect(driver, id, { count: 3 }));
      for (const sectors of [1, 2, 3]) fx.fake.noSpace(id, sectors);
      const seen = await Promise.all(consumers);
      for (const events of seen) {
        assert.deepEqual(events.map((e) => e.code === "no_space" && e.requestedSectors), [1, 2, 3]);
        assert.deepEqual(events, seen[0], "the same events with the same ids");
      }
      const late = await driver.waitEvents(id, { timeoutMs: 0 });
      assert.deepEqual(late.events, seen[0], "a consumer coming later reads them all");
      const abort = new AbortController();
      const aborted = driver.waitEvents(id, {
        after: late.lastId,
        timeoutMs: 60_000,
        signal: abort.signal,
      });
      abort.abort();
      assert.deepEqual((await aborted).events, [], "an aborted wait answers with none");
      fx.fake.noSpace(id, 4);
      const [fourth] = await collect(driver, id, { count: 1, after: late.lastId });
      assert.equal(fourth.code === "no_space" && fourth.requestedSectors, 4, "it took nothing");
      assert.deepEqual(await driver.stats(), { events: 4 });
    } finally {
      await fx.cleanup();
    }
  });
}

Deno.test("a waitEvents keeps the caller's timeout when the module sleeps 4x longer; the late event is kept", async () => {
  const fx = await kernelFixture("outoftree", { waitTimeoutScale: 4 });
  try {
    // Slices of 1 s that the module sleeps 4 s each.
    const driver = await fx.driver({ eventSliceMs: 1000 });
    await driver.attach(fx.devices[0].path);
    const { id } = await driver.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
    });
    const waits = () => fx.fake.calls.filter((c) => c.request === WAIT_EVENT).length;
    const started = performance.now();
    const empty = await driver.waitEvents(id, { timeoutMs: 100 });
    const elapsed = performance.now() - started;
    assert.deepEqual(empty.events, [], "answered at the caller's deadline");
    assert.ok(elapsed < 3000, `the wait took ${elapsed.toFixed(0)} ms, not the module's 4000`);
    assert.equal(waits(), 1, "one kernel wait, still in flight");
    fx.fake.noSpace(id, 77);
    const [late] = (await driver.waitEvents(id, { timeoutMs: 100 })).events;
    assert.equal(late?.code === "no_space" && late.requestedSectors, 77);
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
      driver.waitEvents(id, { timeoutMs: 300 }),
      (error) => isServiceError(error, "NOT_FOUND"),
    );
    await new Promise((resolve) => setTimeout(resolve, 10));
    await driver.destroySnapshot(id);
    await pending;
    await assert.rejects(
      driver.waitEvents(id, { timeoutMs: 10 }),
      (error) => isServiceError(error, "NOT_FOUND"),
    );
  } finally {
    await fx.cleanup();
  }
});

Deno.test({
  name: "a reader blocked on a worker thread leaves the main thread serving driver calls",
  ignore: !gcc,
  async fn() {
    const fx = await kernelFixture("outoftree");
    const lib = await buildBlockingIoctlLib(fx.dir);
    try {
      lib.configure(WaitMode.timeout, 0, 0n);
      const driver = await fx.driver({
        blockingIoctl: new WorkerIoctl({ libraryPath: lib.path }),
      });
      await driver.attach(fx.devices[0].path);
      const { id } = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      const order: string[] = [];
      const waiting = driver.waitEvents(id, { timeoutMs: 300 }).then((page) => {
        order.push(`wait answered ${page.events.length} events`);
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
        "wait answered 0 events",
      ]);
      assert.deepEqual([lib.lastFd()], fx.fake.fdsOn(`${fx.dir}/veeamblksnap`), "the control fd");
      lib.configure(WaitMode.corrupted, 10, (7n << 32n) | 1n);
      const [event] = (await driver.waitEvents(id, { timeoutMs: 2000 })).events;
      lib.configure(WaitMode.timeout, 0, 0n);
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
