/**
 * The upstream numbering check (src/kernel/numbering.ts) on the fake kernel in each numbering:
 * lk6.15 starts and works, v6/v7 is refused at start with MODULE_MISMATCH naming the series
 * (never the NOT_FOUND that lk6.15's ATTACH gets there), a kernel without blk-filter is refused
 * too, and the probe changes nothing on the device it asks. Also the reading of the answers,
 * including a loop device's EINVAL for unknown requests.
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import {
  BLKFILTER_ATTACH,
  BLKFILTER_CTL,
  BLKFILTER_V7_ATTACH,
  BlkfilterAttach,
} from "../../src/kernel/abi.ts";
import { createKernelDriver } from "../../src/kernel/kernel_driver.ts";
import { probeNumbering, readNumbering } from "../../src/kernel/numbering.ts";
import { E, FakeKernel, type FakeKernelOptions } from "../_helpers/fake_libc.ts";
import { kernelFixture } from "../_helpers/kernel_fixture.ts";

function mismatch(pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(isServiceError(error), `not a ServiceError: ${error}`);
    assert.equal(error.code, "MODULE_MISMATCH", error.message);
    assert.match(error.message, pattern);
    return true;
  };
}

Deno.test("readNumbering: ENOENT tells which numbering knows the request; ENOTTY to both, none", () => {
  const cases: [number, number, string][] = [
    [E.ENOENT, E.ENOTTY, "lk6.15"], // lk6.15, virtio-blk, no filter on the device
    [E.EINVAL, E.ENOTTY, "lk6.15"], // lk6.15, a filter on the device
    [E.ENOENT, E.EINVAL, "lk6.15"], // lk6.15, a loop device (EINVAL for unknown requests)
    [E.ENOTTY, E.ENOENT, "v6/v7"], // v7, virtio-blk
    [E.EINVAL, E.ENOENT, "v6/v7"], // v7, a loop device
    [E.ENOTTY, E.ENOTTY, "none"], // no blk-filter at all
    [E.EINVAL, E.EINVAL, "unclear"], // lk6.15 + loop with a filter, or a loop without blk-filter
    [E.EACCES, E.EACCES, "unclear"], // no capability
  ];
  for (const [lk615Ctl, v7Attach, expected] of cases) {
    assert.equal(readNumbering({ lk615Ctl, v7Attach }), expected, `${lk615Ctl}/${v7Attach}`);
  }
});

Deno.test("the fake v7 kernel reproduces the trap: lk6.15's ATTACH reaches its CTL (ENOENT)", async () => {
  const fx = await kernelFixture("upstream", { numbering: "v6/v7" });
  try {
    const [vdb] = fx.devices;
    const fd = fx.fake.open(vdb.path, 0).result;
    const arg = BlkfilterAttach.encode({ name: "blksnap", opt: 0, optlen: 0 });
    assert.deepEqual(fx.fake.ioctl(fd, BLKFILTER_ATTACH, arg), { result: -1, errno: E.ENOENT });
    assert.ok(!fx.fake.isTracked(vdb.path));
    fx.fake.close(fd);
  } finally {
    await fx.cleanup();
  }
});

for (const numbering of ["lk6.15", "v6/v7", "none"] as const) {
  for (const unknownIoctlErrno of [E.ENOTTY, E.EINVAL]) {
    const disk = unknownIoctlErrno === E.ENOTTY ? "virtio-like" : "loop-like";
    Deno.test(`probeNumbering on a ${disk} device of a ${numbering} kernel changes nothing`, async () => {
      const dir = await Deno.makeTempDir({ prefix: "numbering-" });
      try {
        const fake = new FakeKernel({ profile: "upstream", devDir: dir, numbering });
        await Deno.writeFile(`${dir}/loop0`, new Uint8Array(65536));
        fake.addBlockDevice(`${dir}/loop0`, { major: 7, minor: 0, unknownIoctlErrno });
        const answers = probeNumbering(fake, `${dir}/loop0`);
        assert.ok(answers !== undefined);
        const read = readNumbering(answers);
        if (numbering === "none" && unknownIoctlErrno === E.EINVAL) assert.equal(read, "unclear");
        else assert.equal(read, numbering);
        assert.ok(!fake.isTracked(`${dir}/loop0`), "the probe attached nothing");
        assert.deepEqual(fake.snapshotIds(), []);
        assert.equal(fake.openFds, 0, "the probe closed the device");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
}

Deno.test("an lk6.15 kernel starts: one probe at start, nothing attached, then everything works", async () => {
  const fx = await kernelFixture("upstream", { version: [2, 0, 0, 0] });
  try {
    const driver = await fx.driver();
    const count = (request: number) => fx.fake.calls.filter((c) => c.request === request).length;
    assert.equal(count(BLKFILTER_V7_ATTACH), 1, "the v7 probe, once");
    assert.equal(
      count(BLKFILTER_CTL),
      1 + fx.devices.length,
      "the lk6.15 probe once, then CBTINFO once per block device (the start's tracker scan)",
    );
    for (const device of fx.devices) assert.ok(!fx.fake.isTracked(device.path));
    assert.equal((await driver.version()).profile, "upstream");
    const [vdb] = fx.devices;
    await driver.attach(vdb.path);
    assert.equal((await driver.cbtInfo("vdb")).changesNumber, 0);
  } finally {
    await fx.cleanup();
  }
});

async function refusedAtStart(options: Partial<FakeKernelOptions>, pattern: RegExp) {
  const fx = await kernelFixture("upstream", { version: [2, 0, 0, 0], ...options });
  try {
    await assert.rejects(fx.driver(), mismatch(pattern));
    for (const device of fx.devices) assert.ok(!fx.fake.isTracked(device.path));
    assert.equal(fx.fake.openFds, 0, "the refused start closed what it opened");
  } finally {
    await fx.cleanup();
  }
}

Deno.test("a v6/v7 kernel is refused at start with MODULE_MISMATCH naming the series", async () => {
  await refusedAtStart({ numbering: "v6/v7" }, /v6\/v7 numbering.*lk6\.7–lk6\.9.*lk6\.15/);
});

Deno.test("a kernel with the control device but no blk-filter is refused at start", async () => {
  await refusedAtStart({ numbering: "none" }, /answers no block-device filter request/);
});

Deno.test("v6/v7 with no block device to probe at start: the first attach refuses, never NOT_FOUND", async () => {
  const devDir = await Deno.makeTempDir({ prefix: "numbering-dev-" });
  const disks = await Deno.makeTempDir({ prefix: "numbering-disks-" });
  const fake = new FakeKernel({ profile: "upstream", devDir, numbering: "v6/v7" });
  try {
    const path = `${disks}/vdb`;
    await Deno.writeFile(path, new Uint8Array(1 << 20));
    fake.addBlockDevice(path, { major: 254, minor: 16 });
    const driver = await createKernelDriver({ libc: fake, blockingIoctl: fake.blocking, devDir });
    try {
      await assert.rejects(driver.attach(path), mismatch(/v6\/v7 numbering/));
      await assert.rejects(driver.attach(path), mismatch(/v6\/v7 numbering/), "and again");
      assert.ok(!fake.isTracked(path));
      assert.ok(
        !fake.calls.some((c) => c.request === BLKFILTER_ATTACH),
        "lk6.15's ATTACH (v7's CTL) was never sent",
      );
    } finally {
      await driver.close();
    }
  } finally {
    fake.blocking.close();
    await Deno.remove(devDir, { recursive: true });
    await Deno.remove(disks, { recursive: true });
  }
});
