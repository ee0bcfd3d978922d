/**
 * errno to ServiceError through the whole driver: each errno the issue lists,
 * injected into the request that returns it on a real module, for both
 * profiles, plus the EINVAL rule (mismatch vs bad argument) and start-up
 * failures.
 */

import assert from "node:assert/strict";
import { type ErrorCode, isServiceError } from "../../src/errors.ts";
import {
  BDEVFILTER_ATTACH,
  BDEVFILTER_CTL,
  BDEVFILTER_DETACH,
  BLKFILTER_ATTACH,
  BLKFILTER_CTL,
  BLKFILTER_DETACH,
  BlkfilterCtlBlksnap as Cmd,
  IOCTL_BLKSNAP_SNAPSHOT_COLLECT,
  IOCTL_BLKSNAP_SNAPSHOT_CREATE,
  IOCTL_BLKSNAP_SNAPSHOT_DESTROY,
  IOCTL_BLKSNAP_SNAPSHOT_TAKE,
  IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
  IOCTL_BLKSNAP_VERSION,
} from "../../src/kernel/abi.ts";
import type { KernelDriver } from "../../src/kernel/kernel_driver.ts";
import { E } from "../_helpers/fake_libc.ts";
import { type KernelFixture, kernelFixture } from "../_helpers/kernel_fixture.ts";

function code(expected: ErrorCode, errno?: string) {
  return (error: unknown) => {
    assert.ok(isServiceError(error), `not a ServiceError: ${error}`);
    assert.equal(error.code, expected, error.message);
    if (errno) assert.equal(error.errno, errno);
    return true;
  };
}

interface Ready {
  fx: KernelFixture;
  driver: KernelDriver;
  snapshotId: string;
}

/** A driver with vdb attached and in a created snapshot. */
async function ready(profile: "upstream" | "outoftree"): Promise<Ready> {
  const fx = await kernelFixture(profile);
  const driver = await fx.driver();
  await driver.attach(fx.devices[0].path);
  await driver.attach(fx.devices[1].path);
  const { id } = await driver.createSnapshot({
    deviceIds: ["vdb"],
    diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
  });
  return { fx, driver, snapshotId: id };
}

for (const profile of ["upstream", "outoftree"] as const) {
  const ctl = profile === "upstream" ? BLKFILTER_CTL : BDEVFILTER_CTL;
  const attach = profile === "upstream" ? BLKFILTER_ATTACH : BDEVFILTER_ATTACH;
  const detach = profile === "upstream" ? BLKFILTER_DETACH : BDEVFILTER_DETACH;

  Deno.test(`[${profile}] control-device errnos map to the shared error codes`, async () => {
    const { fx, driver, snapshotId } = await ready(profile);
    try {
      const cases: [number, number, ErrorCode, () => Promise<unknown>][] = [
        [IOCTL_BLKSNAP_SNAPSHOT_TAKE, E.EBUSY, "CONFLICT", () => driver.takeSnapshot(snapshotId)],
        [
          IOCTL_BLKSNAP_SNAPSHOT_TAKE,
          E.EALREADY,
          "CONFLICT",
          () => driver.takeSnapshot(snapshotId),
        ],
        [IOCTL_BLKSNAP_SNAPSHOT_TAKE, E.EPERM, "FORBIDDEN", () => driver.takeSnapshot(snapshotId)],
        [IOCTL_BLKSNAP_SNAPSHOT_TAKE, E.EACCES, "FORBIDDEN", () => driver.takeSnapshot(snapshotId)],
        [
          IOCTL_BLKSNAP_SNAPSHOT_TAKE,
          E.ENOTTY,
          "MODULE_MISMATCH",
          () => driver.takeSnapshot(snapshotId),
        ],
        [
          IOCTL_BLKSNAP_SNAPSHOT_TAKE,
          E.EINVAL,
          "MODULE_MISMATCH",
          () => driver.takeSnapshot(snapshotId),
        ],
        [IOCTL_BLKSNAP_SNAPSHOT_TAKE, 5, "IO", () => driver.takeSnapshot(snapshotId)],
        [IOCTL_BLKSNAP_SNAPSHOT_COLLECT, E.ENOTTY, "MODULE_MISMATCH", () => driver.listSnapshots()],
        [IOCTL_BLKSNAP_SNAPSHOT_CREATE, E.ENOSPC, "STORAGE_EXHAUSTED", () =>
          driver.createSnapshot({
            deviceIds: ["vdc"],
            diffStorage: { path: `${fx.dir}/diff-x`, limitBytes: 4096 },
          })],
        [IOCTL_BLKSNAP_SNAPSHOT_CREATE, E.EINVAL, "INVALID_ARGUMENT", () =>
          driver.createSnapshot({
            deviceIds: ["vdc"],
            diffStorage: { path: `${fx.dir}/diff-y`, limitBytes: 4096 },
          })],
        [IOCTL_BLKSNAP_SNAPSHOT_CREATE, E.EACCES, "FORBIDDEN", () =>
          driver.createSnapshot({
            deviceIds: [],
            diffStorage: { path: `${fx.dir}/diff-z`, limitBytes: 4096 },
          })],
      ];
      for (const [request, errno, expected, call] of cases) {
        fx.fake.failNext(request, errno);
        await assert.rejects(call(), code(expected), `errno ${errno} on ${request.toString(16)}`);
      }
      await assert.rejects(Deno.stat(`${fx.dir}/diff-x`), Deno.errors.NotFound);
      assert.equal((await driver.snapshotInfo(snapshotId)).state, "created");
      assert.deepEqual((await driver.listDevices()).map((d) => d.snapshotId), [
        snapshotId,
        undefined,
      ]);
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] filter-command errnos map to the shared error codes`, async () => {
    const { fx, driver, snapshotId } = await ready(profile);
    try {
      const info = Cmd.BLKFILTER_CTL_BLKSNAP_CBTINFO;
      const dirty = Cmd.BLKFILTER_CTL_BLKSNAP_CBTDIRTY;
      const add = Cmd.BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD;
      const ranges = [{ offsetSectors: 0, countSectors: 8 }];
      const cases: [number, number, ErrorCode, () => Promise<unknown>, number?][] = [
        [ctl, E.ENOENT, "NOT_FOUND", () => driver.cbtInfo("vdb"), info],
        [ctl, E.ENOTTY, "MODULE_MISMATCH", () => driver.cbtInfo("vdb"), info],
        [ctl, E.EINVAL, "MODULE_MISMATCH", () => driver.cbtInfo("vdb"), info],
        [ctl, E.EFAULT, "IO", () => driver.readCbtMap("vdb", { offset: 0, length: 1 }), 1],
        [ctl, E.EINVAL, "INVALID_ARGUMENT", () => driver.markDirty("vdb", ranges), dirty],
        [ctl, E.EBUSY, "CONFLICT", () => driver.addDevice(snapshotId, "vdc"), add],
        [ctl, E.EALREADY, "CONFLICT", () => driver.addDevice(snapshotId, "vdc"), add],
        [ctl, E.ESRCH, "NOT_FOUND", () => driver.addDevice(snapshotId, "vdc"), add],
        [ctl, E.EPERM, "FORBIDDEN", () => driver.addDevice(snapshotId, "vdc"), add],
      ];
      for (const [request, errno, expected, call, cmd] of cases) {
        fx.fake.failNext(request, errno, cmd);
        await assert.rejects(call(), code(expected), `errno ${errno} on cmd ${cmd}`);
      }
      assert.deepEqual(
        (await driver.snapshotInfo(snapshotId)).devices.map((d) => d.deviceId),
        ["vdb"],
      );
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] attach and detach errnos follow the EINVAL rule`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const path = fx.devices[0].path;
      fx.fake.failNext(attach, E.EINVAL);
      await assert.rejects(driver.attach(path), code("MODULE_MISMATCH", "EINVAL"));
      fx.fake.failNext(attach, E.ENOTTY);
      await assert.rejects(driver.attach(path), code("MODULE_MISMATCH", "ENOTTY"));
      fx.fake.failNext(attach, E.ENOENT);
      await assert.rejects(driver.attach(path), code("MODULE_MISMATCH", "ENOENT"));
      fx.fake.failNext(attach, E.EBUSY);
      await assert.rejects(driver.attach(path), code("CONFLICT", "EBUSY"));
      fx.fake.failNext(attach, E.EACCES);
      await assert.rejects(driver.attach(path), code("FORBIDDEN"));
      assert.deepEqual(await driver.listDevices(), []);
      await driver.attach(path);
      fx.fake.failNext(detach, E.EINVAL);
      await assert.rejects(driver.detach("vdb"), code("CONFLICT", "EINVAL"));
      fx.fake.failNext(detach, E.EPERM);
      await assert.rejects(driver.detach("vdb"), code("FORBIDDEN"));
      fx.fake.failNext(detach, E.ENOENT);
      await driver.detach("vdb");
      await assert.rejects(driver.getDevice("vdb"), code("NOT_FOUND"));
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] wait-event errnos: ENOENT is a timeout, others map`, async () => {
    const { fx, driver, snapshotId } = await ready(profile);
    try {
      const wait = (timeoutMs: number) => driver.waitEvents(snapshotId, { timeoutMs });
      fx.fake.failNext(IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, E.ENOENT);
      assert.deepEqual((await wait(20)).events, []);
      fx.fake.failNext(IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, E.ESRCH);
      await assert.rejects(wait(2000), code("NOT_FOUND", "ESRCH"));
      fx.fake.failNext(IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, E.ENOTTY);
      await assert.rejects(wait(2000), code("MODULE_MISMATCH"));
      await assert.rejects(wait(-1), code("INVALID_ARGUMENT"));
      fx.fake.failNext(IOCTL_BLKSNAP_SNAPSHOT_DESTROY, E.ENODEV);
      await assert.rejects(driver.destroySnapshot(snapshotId), code("NOT_FOUND", "ENODEV"));
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] VERSION failures at start are a module mismatch`, async () => {
    for (const errno of [E.ENOTTY, E.EINVAL]) {
      const fx = await kernelFixture(profile);
      try {
        fx.fake.failNext(IOCTL_BLKSNAP_VERSION, errno);
        await assert.rejects(fx.driver(), code("MODULE_MISMATCH"));
        assert.equal(fx.fake.openFds, 0, "the control device is closed again");
      } finally {
        await fx.cleanup();
      }
    }
  });
}

Deno.test("without a module the driver names both missing control devices", async () => {
  const fx = await kernelFixture("none");
  try {
    await assert.rejects(fx.driver(), (error) => {
      assert.ok(isServiceError(error, "UNAVAILABLE"));
      assert.equal(
        error.message,
        `${fx.dir}/veeamblksnap and ${fx.dir}/blksnap-control are absent: load bdevfilter and ` +
          `veeamblksnap, or the upstream blksnap module`,
      );
      return true;
    });
  } finally {
    await fx.cleanup();
  }
});

Deno.test("the out-of-tree profile without /dev/bdevfilter is unavailable", async () => {
  const fx = await kernelFixture("outoftree", { withoutBdevfilter: true });
  try {
    await assert.rejects(fx.driver(), (error) => {
      assert.ok(isServiceError(error, "UNAVAILABLE"));
      assert.match(error.message, /bdevfilter is absent: load bdevfilter/);
      return true;
    });
    assert.equal(fx.fake.openFds, 0);
  } finally {
    await fx.cleanup();
  }
});
