/**
 * FIFREEZE for real: an ext4 on the first partition of a loop device,
 * mounted on this host, frozen by a take of the whole disk (the kernel
 * backend on the fake kernel, whose device carries the loop device's
 * numbers, so discovery walks the real /sys and /proc/self/mountinfo).
 * Needs root, losetup, partx, sfdisk and mkfs.ext4; skipped with the reason otherwise.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ConsistentDriver } from "../../src/consistency/consistent_driver.ts";
import { ioctlFreezer } from "../../src/consistency/fs_freezer.ts";
import { isServiceError } from "../../src/errors.ts";
import { createKernelDriver } from "../../src/kernel/kernel_driver.ts";
import { splitDeviceNumber } from "../../src/kernel/libc.ts";
import { FakeKernel } from "../_helpers/fake_libc.ts";

const TOOLS = ["/usr/sbin/losetup", "/usr/bin/partx", "/usr/sbin/sfdisk", "/usr/sbin/mkfs.ext4"];

function missing(): string | undefined {
  if (Deno.uid() !== 0) return "not root";
  const absent = TOOLS.filter((tool) => {
    try {
      return !Deno.statSync(tool).isFile;
    } catch {
      return true;
    }
  });
  if (absent.length) return `${absent.join(", ")} not installed`;
  try {
    Deno.statSync("/dev/loop-control");
  } catch {
    return "no /dev/loop-control";
  }
  return undefined;
}

const reason = missing();
if (reason) console.log(`skipping the real FIFREEZE test: ${reason}`);

async function sh(command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const text = new TextDecoder().decode(output.stdout).trim();
  if (!output.success) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  }
  return text;
}

async function frozenBySomeone(mountPoint: string): Promise<boolean> {
  const freeze = await new Deno.Command("fsfreeze", { args: ["-f", mountPoint], stderr: "piped" })
    .output();
  if (freeze.success) {
    await sh("fsfreeze", ["-u", mountPoint]);
    return false;
  }
  return /busy/i.test(new TextDecoder().decode(freeze.stderr));
}

Deno.test({
  name:
    "take freezes the ext4 on a partition of the snapshotted disk for real (FIFREEZE) and thaws it",
  ignore: reason !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fifreeze-" });
    const image = join(dir, "disk.img");
    const mountPoint = join(dir, "mnt");
    let loop = "";
    let madeNode = "";
    let mounted = false;
    const fake = new FakeKernel({ profile: "upstream", devDir: dir });
    try {
      const file = await Deno.open(image, { write: true, create: true });
      await file.truncate(64 << 20);
      file.close();
      await sh("sfdisk", ["-q", image], "label: gpt\nstart=2048, size=100000\n");
      loop = await sh("losetup", ["-f", "--show", image]);
      await sh("partx", ["-a", loop]);
      const name = loop.replace("/dev/", "");
      const number = (await Deno.readTextFile(`/sys/class/block/${name}p1/dev`)).trim();
      const partition = `${loop}p1`;
      if (!(await Deno.stat(partition).then(() => true, () => false))) {
        const [major, minor] = number.split(":");
        await sh("mknod", [partition, "b", major, minor]);
        madeNode = partition;
      }
      await sh("mkfs.ext4", ["-q", partition]);
      await Deno.mkdir(mountPoint);
      await sh("mount", [partition, mountPoint]);
      mounted = true;

      const disk = join(dir, "vdz");
      await Deno.writeFile(disk, new Uint8Array(1 << 20));
      fake.addBlockDevice(disk, splitDeviceNumber(Deno.statSync(loop).rdev!));
      const kernel = await createKernelDriver({
        libc: fake,
        blockingIoctl: fake.blocking,
        devDir: dir,
      });
      const log: string[] = [];
      let frozenDuringTake: boolean | undefined;
      const inner = new Proxy(kernel, {
        get(target, property) {
          if (property === "takeSnapshot") {
            return async (id: string) => {
              frozenDuringTake = await frozenBySomeone(mountPoint);
              return await target.takeSnapshot(id);
            };
          }
          const value = Reflect.get(target, property, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
      const driver = new ConsistentDriver(inner, {
        freezer: ioctlFreezer(),
        deviceNumber: (path) => fake.blockDeviceNumber(path),
        log: (line) => log.push(line),
      });
      try {
        await driver.attach(disk);
        const snapshot = await driver.createSnapshot({
          deviceIds: ["vdz"],
          diffStorage: { path: join(dir, "diff"), limitBytes: 1 << 30 },
        });
        const taken = await driver.takeSnapshot(snapshot.id);
        assert.equal(
          frozenDuringTake,
          true,
          `the file system was frozen during the take\n${log.join("\n")}`,
        );
        assert.equal(await frozenBySomeone(mountPoint), false, "and thawed after it");
        const [fs] = taken.consistency!.devices[0].filesystems;
        assert.equal(fs.mountPoint, mountPoint);
        assert.equal(fs.blockDevice, `${name}p1`);
        assert.equal(fs.fsType, "ext4");
        assert.equal(fs.frozen, true);
        assert.ok(fs.frozenMs! >= 0);
        await driver.destroySnapshot(snapshot.id);

        await sh("fsfreeze", ["-f", mountPoint]);
        try {
          const again = await driver.createSnapshot({
            deviceIds: ["vdz"],
            diffStorage: { path: join(dir, "diff2"), limitBytes: 1 << 30 },
          });
          const report = (await driver.takeSnapshot(again.id)).consistency!;
          assert.equal(report.devices[0].filesystems[0].frozen, false);
          assert.match(report.devices[0].filesystems[0].error!, /frozen by someone else/);
          assert.equal(await frozenBySomeone(mountPoint), true, "left frozen by its owner");
        } finally {
          await sh("fsfreeze", ["-u", mountPoint]);
        }
        const freezer = ioctlFreezer();
        await assert.rejects(
          freezer.thaw(mountPoint).finally(() => freezer.close()),
          (e) => isServiceError(e) && /EINVAL/.test(e.message),
          "thawing what is not frozen is refused",
        );
      } finally {
        await driver.close();
      }
    } finally {
      if (mounted) await sh("umount", [mountPoint]).catch(() => {});
      if (loop) {
        await sh("partx", ["-d", loop]).catch(() => {});
        await sh("losetup", ["-d", loop]).catch(() => {});
      }
      if (madeNode) await Deno.remove(madeNode).catch(() => {});
      fake.blocking.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
