/**
 * The kernel's NBD client in the lab guest against an NBD server in the guest (qemu-nbd serving
 * a file): the ground the userspace backend's e2e cases stand on. A filesystem made through
 * /dev/nbd0 holds written data across a remount, and the data is in the served file afterwards.
 */

import assert from "node:assert/strict";
import { labTest } from "./_helpers/guest.ts";
import { exists, run, sha256File } from "./_helpers/sh.ts";
import { loadNbd } from "./_helpers/nbd.ts";

const port = "10899"; // not the service's default NBD port (10809)
const exportName = "lab";
const device = "/dev/nbd0";

async function deviceSizeBytes(path: string): Promise<number> {
  return Number((await run("blockdev", ["--getsize64", path])).stdout.trim());
}

labTest({
  name: "the kernel NBD client carries an ext4 filesystem served by qemu-nbd",
  async fn(t) {
    const work = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "lab-nbd-" });
    const image = `${work}/export.img`;
    const mountPoint = `${work}/mnt`;
    const pidFile = `${work}/qemu-nbd.pid`;
    const sizeBytes = 256 * 1024 * 1024;
    let connected = false;
    let mounted = false;
    try {
      await Deno.mkdir(mountPoint);
      await Deno.writeFile(image, new Uint8Array());
      await Deno.truncate(image, sizeBytes);
      await loadNbd();

      await t.step("qemu-nbd serves the file and nbd-client connects /dev/nbd0", async () => {
        await run("qemu-nbd", [
          "--fork",
          "--persistent",
          `--pid-file=${pidFile}`,
          "--format=raw",
          `--export-name=${exportName}`,
          "--bind=127.0.0.1",
          `--port=${port}`,
          image,
        ]);
        await run("nbd-client", ["127.0.0.1", port, device, "-N", exportName]);
        connected = true;
        assert.equal(await deviceSizeBytes(device), sizeBytes);
      });

      const written = `${mountPoint}/data.bin`;
      let digest = "";
      await t.step("mkfs.ext4, mount, write", async () => {
        await run("mkfs.ext4", ["-q", "-F", device]);
        await run("mount", [device, mountPoint]);
        mounted = true;
        await run("dd", ["if=/dev/urandom", `of=${written}`, "bs=1M", "count=16", "status=none"]);
        digest = await sha256File(written);
        await run("sync", []);
      });

      await t.step("the data reads back after a remount", async () => {
        await run("umount", [mountPoint]);
        mounted = false;
        await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3");
        await run("mount", [device, mountPoint]);
        mounted = true;
        assert.equal(await sha256File(written), digest);
        await run("umount", [mountPoint]);
        mounted = false;
      });

      await t.step("disconnect; the served file holds the filesystem and the data", async () => {
        await run("nbd-client", ["-d", device]);
        connected = false;
        await run("e2fsck", ["-f", "-n", image]);
        const copy = `${work}/copy.bin`;
        await run("debugfs", ["-R", `dump /data.bin ${copy}`, image]);
        assert.equal(await sha256File(copy), digest);
      });
    } finally {
      if (mounted) await run("umount", [mountPoint], { allowFailure: true });
      if (connected) await run("nbd-client", ["-d", device], { allowFailure: true });
      if (exists(pidFile)) {
        const pid = Number((await Deno.readTextFile(pidFile)).trim());
        try {
          Deno.kill(pid, "SIGTERM");
        } catch {
          // already gone
        }
      }
      await Deno.remove(work, { recursive: true });
    }
  },
});
