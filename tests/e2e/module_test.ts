/**
 * The blksnap module on the lab guest's kernel: its headers are there, the module builds
 * against them, loads (bdevfilter then veeamblksnap), shows its control devices and unloads;
 * the kernel backend (KernelDriver, bundled like every e2e case) reads its VERSION.
 */

import assert from "node:assert/strict";
import { createKernelDriver } from "../../src/kernel/mod.ts";
import { labTest } from "./_helpers/guest.ts";
import {
  controlDevices,
  headersDir,
  isLoaded,
  kernelRelease,
  loadModules,
  moduleDir,
  moduleFiles,
  moduleNames,
  unloadModules,
} from "./_helpers/module.ts";
import { exists, run } from "./_helpers/sh.ts";

labTest({
  name: "the running kernel's headers are installed for kbuild",
  async fn() {
    const headers = await headersDir();
    assert.ok(exists(`${headers}/Makefile`), `${headers}/Makefile is missing`);
    assert.ok(exists(`${headers}/include/config/auto.conf`), "the headers are not configured");
  },
});

labTest({
  name: "the module builds against the guest's headers with the standard kbuild call",
  requires: ["module-src"],
  async fn() {
    // The one build of this guest run (other module cases reuse it).
    const dir = await moduleDir();
    const release = await kernelRelease();
    for (const file of moduleFiles) {
      assert.ok(exists(`${dir}/${file}`), `${file} was not built`);
      const vermagic = (await run("modinfo", ["-F", "vermagic", `${dir}/${file}`])).stdout;
      assert.equal(vermagic.split(" ")[0], release, `${file} was built for another kernel`);
    }
  },
});

labTest({
  name: "bdevfilter then veeamblksnap load, expose their control devices and unload",
  requires: ["module"],
  async fn(t) {
    const dir = await moduleDir();
    try {
      await t.step("load", async () => {
        await loadModules(dir);
        for (const name of moduleNames) assert.ok(isLoaded(name), `${name} is not loaded`);
      });
      await t.step("control devices are character devices", () => {
        for (const device of controlDevices) {
          assert.ok(Deno.statSync(device).isCharDevice, `${device} is not a character device`);
        }
      });
      await t.step("unload", async () => {
        await unloadModules();
        for (const name of moduleNames) assert.ok(!isLoaded(name), `${name} is still loaded`);
        for (const device of controlDevices) assert.ok(!exists(device), `${device} remains`);
      });
    } finally {
      await unloadModules();
    }
  },
});

labTest({
  name: "KernelDriver reads the module's VERSION (out-of-tree profile)",
  requires: ["module"],
  async fn() {
    await loadModules(await moduleDir());
    const stateDir = await Deno.makeTempDir({ prefix: "blksnap-state-" });
    try {
      const driver = await createKernelDriver({ stateDir });
      try {
        const version = await driver.version();
        assert.equal(version.backend, "kernel");
        assert.equal(version.profile, "outoftree");
        assert.match(version.moduleVersion ?? "", /^7\.\d+\.\d+\.\d+$/);
      } finally {
        await driver.close();
      }
    } finally {
      await Deno.remove(stateDir, { recursive: true });
      await unloadModules();
    }
  },
});
