/**
 * Pulling backups from the kernel backend on the real module, and consistent takes: partition 1
 * of the lab's scratch disk (a virtio disk) is the origin, the service runs `--backend kernel`
 * with its NBD listener on 127.0.0.1:10809.
 *
 * - NBD: nbdcopy of `origin@ID` equals the image device; `nbdinfo --map=qemu:dirty-bitmap:cbt`
 *   equals the API's changes; a writable snapshot's export takes writes (qemu-io) that the image
 *   device then shows, and the origin stays as it was.
 * - Freeze: ext4 on the origin with a writer appending to a file; a take freezes it (the report
 *   names the mount point, frozen, for how long); the image's superblock does not need journal
 *   recovery, it mounts read-only, `e2fsck -n` finds nothing, and the file is a prefix of what the
 *   writer wrote. With `freeze: false` the report says nothing was frozen.
 */

import assert from "node:assert/strict";
import { assertSameBytes, randomBytes, readAt, writeAt } from "./_helpers/block_io.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { fsckClean, mkfsExt4, mount } from "./_helpers/ext4.ts";
import { labTest } from "./_helpers/guest.ts";
import { kernelService } from "./_helpers/kernel_service.ts";
import { originBytes, scratchPartitions } from "./_helpers/scratch.ts";
import { run } from "./_helpers/sh.ts";
import { mountTmpfs } from "./_helpers/tmpfs.ts";
import { AppendWriter } from "./_helpers/writers.ts";

const MiB = 1024 * 1024;
const NBD = "nbd://127.0.0.1:10809";

/**
 * A tmpfs for the difference storage (mounted first: it unmounts after the
 * service has destroyed the snapshots), the kernel service, and the origin
 * partition of the scratch disk.
 */
async function pullSetup(stack: AsyncDisposableStack) {
  const tmpfs = (await mountTmpfs(stack, { sizeBytes: 128 * MiB })).dir;
  const { client } = await kernelService(stack);
  const { origin } = await scratchPartitions();
  return { tmpfs, client, origin };
}

interface MapExtent {
  offset: number;
  length: number;
  type: number;
}

labTest({
  name:
    "kernel over NBD: nbdcopy equals the image device, the dirty bitmap equals the API's changes",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      const { tmpfs, client, origin } = await pullSetup(stack);
      await writeAt(origin, 0, randomBytes(4 * MiB));
      const device = await client.devices.attach({ path: origin, name: "origin" });
      const storage = { path: `${tmpfs}/pull.diff`, limitBytes: 64 * MiB };
      const first = await client.snapshots.create({ devices: [device.id], diffStorage: storage });
      await client.snapshots.take(first.id);
      await client.snapshots.destroy(first.id);
      await writeAt(origin, 3 * MiB + 4096, randomBytes(200 * 1024));
      await writeAt(origin, originBytes - 4096, randomBytes(4096));
      const second = await client.snapshots.create({ devices: [device.id], diffStorage: storage });
      const taken = await client.snapshots.take(second.id);
      const image = taken.devices[0].imageDevicePath!;

      const copy = `${tmpfs}/copy.raw`;
      await run("nbdcopy", [`${NBD}/origin@${second.id}`, copy]);
      assertSameBytes(
        await Deno.readFile(copy),
        await readAt(image, 0, originBytes),
        "nbdcopy vs the image device",
      );
      await Deno.remove(copy);

      const map = JSON.parse(
        (await run("nbdinfo", [
          "--map=qemu:dirty-bitmap:cbt",
          "--json",
          `${NBD}/origin@${second.id}`,
        ])).stdout,
      ) as MapExtent[];
      const changes = await client.images.changes(second.id, device.id);
      assert.ok(changes.extents.length >= 2, JSON.stringify(changes.extents));
      assert.deepEqual(
        map.filter((e) => e.type === 1).map(({ offset, length }) => ({ offset, length })),
        changes.extents,
      );
    });
  },
});

labTest({
  name: "kernel over NBD: a writable snapshot's export takes writes, the origin does not change",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      const { tmpfs, client, origin } = await pullSetup(stack);
      const before = randomBytes(MiB);
      await writeAt(origin, 0, before);
      const device = await client.devices.attach({ path: origin, name: "origin" });
      const created = await client.snapshots.create({
        devices: [device.id],
        diffStorage: { path: `${tmpfs}/w.diff`, limitBytes: 64 * MiB },
        writable: true,
      });
      const taken = await client.snapshots.take(created.id);
      await run("qemu-io", [
        "-f",
        "raw",
        `${NBD}/origin@${created.id}`,
        "-c",
        "write -P 0xab 65536 131072",
        "-c",
        "flush",
      ]);
      const written = await readAt(taken.devices[0].imageDevicePath!, 65536, 131072);
      assert.ok(written.every((b) => b === 0xab), "the image device shows the NBD write");
      assertSameBytes(await readAt(origin, 0, MiB), before, "the origin");
    });
  },
});

labTest({
  name:
    "kernel take freezes ext4 on the origin partition while a writer runs: the image needs no journal recovery and e2fsck -n is clean",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      const { tmpfs, client, origin } = await pullSetup(stack);
      await mkfsExt4(origin);
      const fs = await mount(origin, "/mnt/lab-origin");
      stack.defer(() => fs.unmount());
      const writer = new AppendWriter(`${fs.dir}/log.txt`);
      stack.defer(async () => void await writer.stop());
      await new Promise((resolve) => setTimeout(resolve, 500));
      const device = await client.devices.attach({ path: origin, name: "origin" });
      const created = await client.snapshots.create({
        devices: [device.id],
        diffStorage: { path: `${tmpfs}/f.diff`, limitBytes: 64 * MiB },
      });
      const taken = await client.snapshots.take(created.id);
      const written = await writer.stop();
      const report = taken.consistency!;
      assert.equal(report.freeze, true);
      assert.equal(report.thawedEarly, false);
      const [frozen] = report.devices[0].filesystems;
      assert.equal(frozen.mountPoint, fs.dir, JSON.stringify(report));
      assert.equal(frozen.frozen, true);
      assert.ok(frozen.frozenMs! >= 0);

      const image = taken.devices[0].imageDevicePath!;
      const header = (await run("dumpe2fs", ["-h", image])).stdout;
      assert.doesNotMatch(header, /needs_recovery/, "the journal needs no recovery");
      assert.match(header, /Filesystem state:\s+clean/);
      await fsckClean(image);
      const copy = await mount(image, "/mnt/lab-image", { options: "ro" });
      try {
        const seen = await Deno.readFile(`${copy.dir}/log.txt`);
        assert.ok(seen.length <= written);
        assertSameBytes(seen, AppendWriter.expected(seen.length), "the log is a prefix");
      } finally {
        await copy.unmount();
      }

      await client.snapshots.destroy(created.id);
      const unfrozen = await client.snapshots.create({
        devices: [device.id],
        diffStorage: { path: `${tmpfs}/g.diff`, limitBytes: 64 * MiB },
      });
      const plain = await client.snapshots.take(unfrozen.id, { freeze: false });
      assert.deepEqual(plain.consistency, {
        freeze: false,
        devices: [{ deviceId: device.id, filesystems: [] }],
        hooks: [],
        thawedEarly: false,
      });
    });
  },
});
