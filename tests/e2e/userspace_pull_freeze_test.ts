/**
 * Consistent takes on the userspace backend: the guest mounts an ext4 from the service's own
 * export through /dev/nbd2 (nbd-client in ioctl mode, `-L`, so the service can trace the device
 * back to the export through its nbd-client process), a writer appends to a file, and a take
 * freezes that file system (FIFREEZE runs off the service's main thread: the freeze's own writes
 * come back to the service over NBD). The image, reached through /dev/nbd3, needs no journal
 * recovery, `e2fsck -n` is clean and the file is a prefix of what the writer wrote.
 */

import assert from "node:assert/strict";
import { createClient } from "../../src/client/mod.ts";
import { assertSameBytes } from "./_helpers/block_io.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { fsckClean, mkfsExt4, mount } from "./_helpers/ext4.ts";
import { labTest } from "./_helpers/guest.ts";
import { connectNbd, loadNbd, parseNbdUri } from "./_helpers/nbd.ts";
import { scratchFiles } from "./_helpers/scratch.ts";
import { startService } from "./_helpers/service.ts";
import { run, waitFor } from "./_helpers/sh.ts";
import { AppendWriter } from "./_helpers/writers.ts";

const MiB = 1024 * 1024;

function sizeOf(device: string): number {
  const name = device.replace(/^\/dev\//, "");
  return Number(Deno.readTextFileSync(`/sys/block/${name}/size`).trim()) * 512;
}

labTest({
  name:
    "userspace take freezes the ext4 this guest mounts from the export through /dev/nbd2; the image needs no journal recovery",
  requires: ["service"],
  async fn() {
    await withCleanup(async (stack) => {
      const work = await Deno.makeTempDir({ dir: await scratchFiles(), prefix: "freeze-" });
      stack.defer(() => Deno.remove(work, { recursive: true }));
      const service = stack.use(await startService({ backend: "userspace" }));
      const client = createClient({ baseUrl: service.url, timeoutMs: 120_000 });
      const disk = `${work}/vfz.img`;
      await Deno.writeFile(disk, new Uint8Array());
      await Deno.truncate(disk, 128 * MiB);
      const device = await client.devices.attach({ path: disk, name: "vfz" });
      stack.defer(() => client.devices.detach(device.id));
      await loadNbd();
      const { host, port, exportName } = parseNbdUri(device.locator);
      await run("nbd-client", [host, port, "/dev/nbd2", "-N", exportName, "-b", "4096", "-L"]);
      stack.defer(async () => {
        await run("nbd-client", ["-d", "/dev/nbd2"]);
        await waitFor("/dev/nbd2 to disconnect", () => sizeOf("/dev/nbd2") === 0);
      });
      await waitFor("/dev/nbd2 to have a size", () => sizeOf("/dev/nbd2") > 0);
      await mkfsExt4("/dev/nbd2");
      const origin = stack.use(await mount("/dev/nbd2", `${work}/origin`));
      const writer = new AppendWriter(`${origin.dir}/log.txt`);
      stack.defer(async () => void await writer.stop());
      await new Promise((resolve) => setTimeout(resolve, 500));

      const created = await client.snapshots.create({
        devices: [device.id],
        diffStorage: { path: `${work}/vfz.diff`, limitBytes: 256 * MiB },
      });
      stack.defer(async () => {
        const listed = await client.snapshots.list();
        if (listed.some((s) => s.id === created.id)) await client.snapshots.destroy(created.id);
      });
      const taken = await client.snapshots.take(created.id);
      const written = await writer.stop();
      const [frozen] = taken.consistency!.devices[0].filesystems;
      assert.equal(frozen?.blockDevice, "nbd2", JSON.stringify(taken.consistency));
      assert.equal(frozen.mountPoint, origin.dir);
      assert.equal(frozen.frozen, true);

      const image = stack.use(await connectNbd("/dev/nbd3", taken.devices[0].locator!));
      const header = (await run("dumpe2fs", ["-h", image.device])).stdout;
      assert.doesNotMatch(header, /needs_recovery/, "the journal needs no recovery");
      await fsckClean(image.device);
      const copy = await mount(image.device, `${work}/image`, { options: "ro" });
      try {
        const seen = await Deno.readFile(`${copy.dir}/log.txt`);
        assert.ok(seen.length <= written);
        assertSameBytes(seen, AppendWriter.expected(seen.length), "the log is a prefix");
      } finally {
        await copy.unmount();
      }
    });
  },
});
