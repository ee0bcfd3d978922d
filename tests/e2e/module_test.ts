/**
 * The blksnap module on the lab guest's kernel: its headers are there, the module builds
 * against them, loads (bdevfilter then veeamblksnap), shows its control devices and unloads.
 */

import assert from "node:assert/strict";
import { labTest } from "./_helpers/guest.ts";
import {
  buildModule,
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
import { labEnv } from "./_helpers/guest.ts";

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
    const target = await Deno.makeTempDir({ prefix: "blksnap-module-" });
    try {
      const output = await buildModule(labEnv().moduleSrc!, target);
      const release = await kernelRelease();
      for (const file of moduleFiles) {
        assert.ok(exists(`${target}/${file}`), `${file} was not built:\n${output}`);
        const vermagic = (await run("modinfo", ["-F", "vermagic", `${target}/${file}`])).stdout;
        assert.equal(vermagic.split(" ")[0], release, `${file} was built for another kernel`);
      }
    } finally {
      await Deno.remove(target, { recursive: true });
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
