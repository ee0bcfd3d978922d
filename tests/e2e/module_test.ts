/**
 * The blksnap module on the lab guest's kernel, in the form the run has it: the out-of-tree
 * module builds against the guest's headers (or is given prebuilt for this kernel), loads
 * (bdevfilter then veeamblksnap), shows its control devices and unloads; the kernel's own
 * blksnap (built in, or a module of a --kernel-image) shows /dev/blksnap-control. Either way the
 * kernel backend (KernelDriver, bundled like every e2e case) reads VERSION and reports the
 * profile of the control device that is there. The driver's numbering probe reads this kernel
 * right: lk6.15 where the upstream series is in, "none" on a kernel without blk-filter.
 */

import assert from "node:assert/strict";
import { createKernelDriver } from "../../src/kernel/mod.ts";
import { realLibc } from "../../src/kernel/libc.ts";
import { probeNumbering, readNumbering } from "../../src/kernel/numbering.ts";
import { labEnv, labTest } from "./_helpers/guest.ts";
import {
  blksnapSource,
  expectedProfile,
  headersDir,
  isLoaded,
  kernelRelease,
  loadModules,
  moduleDir,
  moduleFiles,
  presentProfile,
  profileControlDevices,
  unloadableModules,
  unloadModules,
  upstreamControlDevice,
  versionPattern,
} from "./_helpers/module.ts";
import { exists, run } from "./_helpers/sh.ts";

labTest({
  name: "the guest runs the kernel the lab booted (the image's, or the --kernel-image)",
  async fn() {
    const release = await kernelRelease();
    const lab = labEnv();
    if (lab.kernelImage !== undefined) {
      assert.equal(release, lab.kernelImage, "uname -r is the --kernel-image's release");
    } else {
      const manifest = JSON.parse(await Deno.readTextFile("/etc/blksnap-lab/manifest.json"));
      assert.equal(release, manifest.kernelRelease, "uname -r is the image's kernel");
    }
  },
});

labTest({
  name:
    "blksnap is there for this kernel: built in, or its module is built or given for exactly this release",
  requires: ["module"],
  async fn() {
    const release = await kernelRelease();
    const source = blksnapSource();
    if (source === "builtin") {
      // Before any case could load anything (the runner looked at boot): a misc device.
      const info = Deno.statSync(upstreamControlDevice);
      assert.ok(info.isCharDevice, `${upstreamControlDevice} is not a character device`);
      assert.ok(isLoaded("blksnap"), "/sys/module/blksnap is missing");
      assert.ok(
        !exists("/sys/module/blksnap/initstate"),
        "blksnap is a loaded module, not built in",
      );
      return;
    }
    if (source === "module") {
      const vermagic = (await run("modinfo", ["-F", "vermagic", "blksnap"])).stdout;
      assert.equal(vermagic.split(" ")[0], release, "blksnap.ko is for another kernel");
      return;
    }
    if (labEnv().moduleSrc !== undefined) {
      const headers = await headersDir();
      assert.ok(exists(`${headers}/Makefile`), `${headers}/Makefile is missing`);
      assert.ok(exists(`${headers}/include/config/auto.conf`), "the headers are not configured");
    }
    // The one build of this guest run, when the source was given (other module cases reuse it).
    const dir = await moduleDir();
    for (const file of moduleFiles) {
      assert.ok(exists(`${dir}/${file}`), `${file} is missing from ${dir}`);
      const vermagic = (await run("modinfo", ["-F", "vermagic", `${dir}/${file}`])).stdout;
      assert.equal(vermagic.split(" ")[0], release, `${file} was built for another kernel`);
    }
  },
});

labTest({
  name:
    "blksnap's control devices are character devices once it is loaded; modules unload and take them away",
  requires: ["module"],
  async fn(t) {
    const profile = expectedProfile()!;
    try {
      await t.step("load", async () => {
        await loadModules();
        for (const name of unloadableModules()) assert.ok(isLoaded(name), `${name} is not loaded`);
        assert.equal(presentProfile(), profile, "the control device of the expected profile");
      });
      await t.step("control devices are character devices", () => {
        for (const device of profileControlDevices(profile)) {
          assert.ok(Deno.statSync(device).isCharDevice, `${device} is not a character device`);
        }
      });
      await t.step("unload (built in: stays)", async () => {
        await unloadModules();
        for (const name of unloadableModules()) {
          assert.ok(!isLoaded(name), `${name} is still loaded`);
        }
        const builtin = blksnapSource() === "builtin";
        for (const device of profileControlDevices(profile)) {
          assert.equal(exists(device), builtin, `${device} ${builtin ? "is gone" : "remains"}`);
        }
      });
    } finally {
      await unloadModules();
    }
  },
});

labTest({
  name: "KernelDriver reads the module's VERSION and reports the profile of its control device",
  requires: ["module"],
  async fn() {
    await loadModules();
    const stateDir = await Deno.makeTempDir({ prefix: "blksnap-state-" });
    try {
      const driver = await createKernelDriver({ stateDir });
      try {
        const version = await driver.version();
        const profile = presentProfile()!;
        assert.equal(version.backend, "kernel");
        assert.equal(version.profile, profile);
        assert.equal(profile, expectedProfile(), "the run's blksnap has this profile");
        assert.match(version.moduleVersion ?? "", versionPattern(profile));
      } finally {
        await driver.close();
      }
    } finally {
      await Deno.remove(stateDir, { recursive: true });
      await unloadModules();
    }
  },
});

labTest({
  name:
    "the numbering probe reads this kernel right on a virtio disk and a loop device and attaches nothing",
  async fn() {
    const { scratchDisk } = labEnv();
    assert.ok(scratchDisk !== undefined, "the lab gives a scratch disk");
    // The kernel's own blk-filter is there exactly when it has the upstream control device;
    // without it virtio-blk answers ENOTTY to both probes, loop EINVAL to both (undecided).
    const upstream = blksnapSource() === "builtin" || blksnapSource() === "module";
    const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "numbering-" });
    let loop: string | undefined;
    try {
      await Deno.writeFile(`${dir}/backing.img`, new Uint8Array(1 << 20));
      loop = (await run("losetup", ["--find", "--show", `${dir}/backing.img`])).stdout.trim();
      const devices = [[scratchDisk, upstream ? "lk6.15" : "none"], [
        loop,
        upstream ? "lk6.15" : "unclear",
      ]] as const;
      for (const [device, expected] of devices) {
        const answers = probeNumbering(realLibc(), device);
        assert.ok(answers !== undefined, `${device} opens`);
        console.log(`${device}: ${JSON.stringify(answers)}`);
        assert.equal(readNumbering(answers), expected, `${device}: ${JSON.stringify(answers)}`);
        const name = Deno.realPathSync(device).replace(/^\/dev\//, "");
        const filter = `/sys/class/block/${name}/filter`;
        if (exists(filter)) assert.equal(Deno.readTextFileSync(filter).trim(), "", "no filter");
      }
    } finally {
      if (loop !== undefined) await run("losetup", ["--detach", loop]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
