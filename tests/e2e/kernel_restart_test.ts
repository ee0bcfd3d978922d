/**
 * The kernel backend across service restarts, on the real module: a snapshot's image, mounted
 * read-only while the origin (ext4) keeps changing, stays readable with the data as of take
 * through a clean stop of the service (SIGTERM, as `systemctl restart` sends), while the service
 * is down, and after it starts again: the restarted service lists the snapshot as taken with its
 * device, image and CBT generation, with its state file and without it (re-adopted from the
 * module through SNAPSHOT_COLLECT and SNAPSHOTINFO).
 */

import assert from "node:assert/strict";
import { createClient } from "../../src/client/mod.ts";
import { assertSameBytes, randomBytes, readAt } from "./_helpers/block_io.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { mkfsExt4, mount } from "./_helpers/ext4.ts";
import { labTest } from "./_helpers/guest.ts";
import { modulesForCase } from "./_helpers/module.ts";
import { scratchPartitions } from "./_helpers/scratch.ts";
import { type RunningService, startService } from "./_helpers/service.ts";
import { run } from "./_helpers/sh.ts";
import { mountTmpfs } from "./_helpers/tmpfs.ts";

const MiB = 1024 * 1024;

/** Drops the page cache, so that reads through a mount go to its device again. */
async function dropCaches(): Promise<void> {
  await run("sync", []);
  await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3\n");
}

labTest({
  name: "kernel: a mounted image stays readable through service restarts, and is re-adopted",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      await modulesForCase(stack);
      const tmpfs = (await mountTmpfs(stack, { sizeBytes: 128 * MiB })).dir;
      const stateDir = await Deno.makeTempDir({ prefix: "blksnap-restart-state-" });
      stack.defer(() => Deno.remove(stateDir, { recursive: true }));
      const { origin } = await scratchPartitions();
      await mkfsExt4(origin);
      const originFs = stack.use(await mount(origin, "/mnt/restart-origin"));
      const atTake = randomBytes(8 * MiB);
      await Deno.writeFile(`${originFs.dir}/data.bin`, atTake);
      await run("sync", []);

      let service: RunningService = await startService({ backend: "kernel", stateDir });
      stack.defer(() => service.stop());
      const client = createClient({ baseUrl: service.url, timeoutMs: 120_000 });
      stack.defer(async () => {
        for (const snapshot of await client.snapshots.list()) {
          await client.snapshots.destroy(snapshot.id);
        }
        for (const device of await client.devices.list()) await client.devices.detach(device.id);
      });
      const device = await client.devices.attach({ path: origin, name: "origin" });
      const created = await client.snapshots.create({
        devices: [device.id],
        diffStorage: { path: `${tmpfs}/origin.diff`, limitBytes: 64 * MiB },
      });
      const taken = await client.snapshots.take(created.id);
      const image = taken.devices[0].imageDevicePath!;
      const generation = (await client.cbt.info(device.id)).generationId;
      const imageFs = stack.use(await mount(image, "/mnt/restart-image", { options: "ro,noload" }));
      const imageFile = `${imageFs.dir}/data.bin`;
      const imageStart = await readAt(image, 0, MiB);

      await Deno.writeFile(`${originFs.dir}/data.bin`, randomBytes(8 * MiB));
      await run("sync", []);
      const check = async (when: string) => {
        await dropCaches();
        assertSameBytes(await Deno.readFile(imageFile), atTake, `the image's file ${when}`);
      };
      await check("after the origin changed");

      for (const withStateFile of [true, false]) {
        const how = withStateFile ? "with its state file" : "without its state file";
        await service.stop();
        await check("while the service is stopped");
        if (!withStateFile) await Deno.remove(`${stateDir}/kernel-driver.json`);
        service = await startService({ backend: "kernel", stateDir });
        const [listed] = await client.snapshots.list();
        assert.equal(listed?.id, created.id, `the snapshot is back ${how}`);
        assert.equal(listed.state, "taken", how);
        assert.deepEqual(listed.devices.map((d) => [d.deviceId, d.imageDevicePath]), [
          [withStateFile ? device.id : origin.split("/").pop(), image],
        ]);
        const deviceId = listed.devices[0].deviceId;
        assert.equal((await client.cbt.info(deviceId)).generationId, generation, how);
        const response = await client.images.read(created.id, deviceId, {
          offset: 0,
          length: MiB,
        });
        assertSameBytes(new Uint8Array(await response.arrayBuffer()), imageStart, how);
        await check(`after a restart ${how}`);
      }
      await imageFs.unmount();
    });
  },
});
