/**
 * The real libc on this machine, which has no blksnap module: errno comes
 * back from real system calls, a control device that is not blksnap's is a
 * clear MODULE_MISMATCH, an absent one a clear UNAVAILABLE, and importing the
 * kernel backend needs no FFI permission.
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { IOCTL_BLKSNAP_VERSION } from "../../src/kernel/abi.ts";
import { createKernelDriver } from "../../src/kernel/kernel_driver.ts";
import { OpenFlags, realLibc, splitDeviceNumber } from "../../src/kernel/libc.ts";
import { ModuleClient } from "../../src/kernel/module_client.ts";
import { probeProfile } from "../../src/kernel/profiles.ts";

const libc = realLibc();

Deno.test("importing the kernel backend opens nothing and needs no FFI permission", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kernel-import-" });
  try {
    const modUrl = new URL("../../src/kernel/mod.ts", import.meta.url).href;
    const script = `${dir}/import.ts`;
    await Deno.writeTextFile(
      script,
      `import { KernelDriver } from "${modUrl}";\n` +
        `new KernelDriver();\n` +
        `console.log(Deno.permissions.querySync({ name: "ffi" }).state);\n`,
    );
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--no-lock", "--no-config", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assert.ok(run.success, stderr);
    assert.equal(new TextDecoder().decode(run.stdout).trim(), "prompt");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("real libc returns errno from the calling thread", () => {
  const missing = libc.open("/nonexistent/blksnap-test", OpenFlags.O_RDONLY);
  assert.deepEqual(missing, { result: -1, errno: 2 });
  const opened = libc.open("/dev/null", OpenFlags.O_RDONLY | OpenFlags.O_CLOEXEC);
  assert.ok(opened.result >= 0);
  try {
    const version = libc.ioctl(opened.result, IOCTL_BLKSNAP_VERSION, new Uint8Array(8));
    assert.deepEqual(version, { result: -1, errno: 25 }, "ENOTTY from /dev/null");
  } finally {
    assert.deepEqual(libc.close(opened.result), { result: 0, errno: 0 });
  }
  // Closing the same number twice would race the test modules of this
  // process (--parallel runs them on threads): another module may have
  // opened it in between. A number no process can hold answers EBADF too.
  assert.deepEqual(libc.close(0x7fffffff), { result: -1, errno: 9 }, "EBADF for no descriptor");
});

Deno.test("pointerOf gives the address of a view's first byte", () => {
  const buffer = new Uint8Array(64);
  const base = libc.pointerOf(buffer);
  assert.ok(base > 0);
  assert.equal(libc.pointerOf(buffer.subarray(16)), base + 16);
  assert.equal(libc.pointerOf(new Uint8Array(0)), 0);
});

Deno.test("monotonicNs reads CLOCK_MONOTONIC", async () => {
  const first = libc.monotonicNs();
  await new Promise((resolve) => setTimeout(resolve, 20));
  const elapsedMs = Number(libc.monotonicNs() - first) / 1e6;
  assert.ok(elapsedMs >= 15 && elapsedMs < 10_000, `${elapsedMs} ms`);
});

Deno.test("device numbers split as glibc encodes them", () => {
  assert.deepEqual(splitDeviceNumber(254 << 8), { major: 254, minor: 0 });
  const large = (259 << 8) | 44 | (256 << 12);
  assert.deepEqual(splitDeviceNumber(large), { major: 259, minor: 300 });
  assert.deepEqual(splitDeviceNumber(Deno.statSync("/dev/null").rdev!), { major: 1, minor: 3 });
  assert.equal(libc.blockDeviceNumber("/dev/null"), undefined, "a character device");
  assert.equal(libc.blockDeviceNumber("/nonexistent"), undefined);
});

Deno.test("a control device that is not blksnap's is a clear module mismatch", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kernel-mismatch-" });
  try {
    await Deno.symlink("/dev/null", `${dir}/veeamblksnap`);
    await assert.rejects(createKernelDriver({ devDir: dir }), (error) => {
      assert.ok(isServiceError(error, "MODULE_MISMATCH"));
      assert.equal(error.errno, "ENOTTY");
      assert.match(error.message, /VERSION \(0x80085600\) with ENOTTY/);
      assert.match(error.message, new RegExp(`${dir}/veeamblksnap`));
      return true;
    });
    await Deno.writeTextFile(`${dir}/blksnap-control`, "a regular file");
    await assert.rejects(
      createKernelDriver({ devDir: dir }),
      (error) => isServiceError(error, "MODULE_MISMATCH") && /blksnap-control/.test(error.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const moduleLoaded = (await probeProfile()) !== undefined;

Deno.test({
  name: "without the module, the real driver fails at start naming what is missing",
  ignore: moduleLoaded,
  async fn() {
    await assert.rejects(createKernelDriver(), (error) => {
      assert.ok(isServiceError(error, "UNAVAILABLE"));
      assert.equal(
        error.message,
        "/dev/veeamblksnap and /dev/blksnap-control are absent: load bdevfilter and " +
          "veeamblksnap, or the upstream blksnap module",
      );
      return true;
    });
  },
});
if (moduleLoaded) console.log("skipping the no-module test: a blksnap control device exists");

Deno.test("probeProfile looks for either control device without FFI", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kernel-probe-" });
  try {
    assert.equal(await probeProfile({ devDir: dir }), undefined);
    await Deno.writeTextFile(`${dir}/veeamblksnap`, "");
    assert.equal(await probeProfile({ devDir: dir }), "outoftree");
    await Deno.writeTextFile(`${dir}/blksnap-control`, "");
    assert.equal(await probeProfile({ devDir: dir }), "upstream");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("BLKGETSIZE64 through real libc tells a regular file from a block device", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kernel-size-" });
  const client = new ModuleClient(libc, {
    profile: "outoftree",
    controlPath: "/dev/null",
    controlFd: -1,
    moduleVersion: "0.0.0.0",
    filter: {
      attach: () => ({ result: -1, errno: 25, request: 0 }),
      detach: () => ({ result: -1, errno: 25, request: 0 }),
      ctl: () => ({ result: -1, errno: 25, request: 0 }),
      close() {},
    },
  });
  try {
    await Deno.writeFile(`${dir}/disk.img`, new Uint8Array(4096));
    assert.throws(
      () => client.blockDeviceSize(`${dir}/disk.img`, "Cannot attach"),
      (error) =>
        isServiceError(error, "INVALID_ARGUMENT") && /not a block device/.test(error.message),
    );
    assert.throws(
      () => client.blockDeviceSize(`${dir}/absent`, "Cannot attach"),
      (error) => isServiceError(error, "NOT_FOUND"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
