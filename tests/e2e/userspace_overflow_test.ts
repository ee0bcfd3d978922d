/**
 * The userspace backend when a snapshot's difference storage overflows under a real file
 * system: a 4 MiB storage limit (16 chunks of 256 KiB) and 48 MiB written to the origin after
 * the take (every chunk touched is copied first, so the storage runs out long before). The
 * origin file system loses nothing (its files verify after a remount with cold caches, e2fsck
 * finds it clean), the snapshot is reported corrupted with ENOSPC (28) for the device, the
 * events endpoint delivers the events (a `corrupted` one with ENOSPC; a `no_space` one before it
 * when the backend reports the limit), and the image refuses reads.
 */

import assert from "node:assert/strict";
import type { SnapshotEvent } from "../../src/driver.ts";
import { ProblemError } from "../../src/client/mod.ts";
import { randomBytes, writeAt } from "./_helpers/block_io.ts";
import { fsckClean, mount, whileFrozen } from "./_helpers/ext4.ts";
import { assertFiles, type FileDigests, writeRandomFile } from "./_helpers/files.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labTest } from "./_helpers/guest.ts";
import { run, sha256File } from "./_helpers/sh.ts";
import { destroyLater, trackedFilesystem } from "./_helpers/tracked_fs.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

labTest({
  name:
    "userspace: a small difference storage overflows; the origin file system stays intact, the snapshot is corrupted (ENOSPC) with events",
  requires: ["service"],
  async fn() {
    await withCleanup(async (stack) => {
      const fs = await trackedFilesystem(stack, { name: "overflow", sizeBytes: 256 * MiB });
      const origin = fs.origin.dir;
      const files: FileDigests = new Map();
      await writeRandomFile(origin, "kept/one.bin", { sizeBytes: 1 * MiB, digests: files });
      await writeRandomFile(origin, "kept/two.bin", { sizeBytes: 3 * MiB, digests: files });
      await run("sync", []);

      const created = await fs.client.snapshots.create({
        devices: [fs.device.id],
        diffStorage: { path: `${fs.work}/overflow.diff`, limitBytes: 4 * MiB },
      });
      destroyLater(fs, created.id);
      await whileFrozen(origin, () => fs.client.snapshots.take(created.id));

      // After take: change a kept file and write far more than the storage holds.
      await writeAt(`${origin}/kept/two.bin`, 512 * KiB, randomBytes(1 * MiB));
      files.set("kept/two.bin", await sha256File(`${origin}/kept/two.bin`));
      for (let i = 0; i < 6; i++) {
        await writeRandomFile(origin, `flood/${i}.bin`, { sizeBytes: 8 * MiB, digests: files });
      }
      await run("sync", []);

      const events: SnapshotEvent[] = [];
      const deadline = Date.now() + 60_000;
      let after = 0;
      while (!events.some((e) => e.code === "corrupted") && Date.now() < deadline) {
        const page = await fs.client.snapshots.waitEvents(created.id, { after, timeoutMs: 2000 });
        events.push(...page.events);
        after = page.lastId;
      }
      console.log(`events: ${JSON.stringify(events)}`);
      const corrupted = events.findIndex((e) => e.code === "corrupted");
      assert.ok(corrupted >= 0, `a corrupted event arrived (got ${JSON.stringify(events)})`);
      const event = events[corrupted];
      assert.ok(event.code === "corrupted");
      assert.equal(event.errorCode, 28);
      assert.equal(event.errorName, "ENOSPC");
      for (const [i, other] of events.entries()) {
        if (other.code !== "no_space") continue;
        assert.ok(i < corrupted, "no_space comes before corrupted");
        assert.ok(other.requestedSectors > 0, "no_space says how much the storage asked for");
      }

      const info = await fs.client.snapshots.get(created.id);
      assert.equal(info.state, "corrupted");
      assert.deepEqual(info.devices.map((d) => [d.deviceId, d.errorCode, d.errorName]), [
        [fs.device.id, 28, "ENOSPC"],
      ]);
      const refused = await fs.client.images.read(created.id, fs.device.id, {
        offset: 0,
        length: 4096,
      }).then(
        async (response) => {
          await response.body?.cancel();
          return undefined;
        },
        (error) => error,
      );
      assert.ok(refused instanceof ProblemError, `the image read was refused (${refused})`);
      assert.equal(refused.code, "SNAPSHOT_CORRUPTED");

      // The origin: every file as written, with cold caches, and a clean file system.
      await fs.origin.unmount();
      await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3");
      {
        await using again = await mount(fs.nbd.device, origin);
        await assertFiles(again.dir, files, "the origin after the overflow");
      }
      await fsckClean(fs.nbd.device);
    });
  },
});
