/**
 * The userspace backend under a real file system, through the guest kernel's NBD client: ext4
 * on /dev/nbd0 (the tracked device's export), snapshots taken while two writers keep writing,
 * images reached through /dev/nbd1 (the image's export).
 *
 * - Read-only image: the take is bracketed by fsfreeze, as a backup agent does when the snapshot
 *   layer cannot freeze the file system itself (the kernel module freezes the device at take;
 *   the service cannot). Without the freeze, `ro,noload` shows the file system as of its last
 *   journal checkpoint: in the lab the writers' files, created seconds before the take, were not
 *   on such an image at all. With it, the image mounts with `ro,noload`, e2fsck -fn finds it
 *   clean, the files complete before the take read back with their checksums, files changed or
 *   added after the take show their old state or are absent, and each writer's file is exactly
 *   what it had written when the file system was frozen.
 * - Writable image: taken with no freeze while the writers run, so the image holds a journal to
 *   replay; mounting it read-write replays it, the case writes to it, e2fsck -fn finds it clean,
 *   the writes stay on the image, and the origin shows none of them (its files unchanged, the
 *   writers' files complete, e2fsck clean after unmount).
 */

import assert from "node:assert/strict";
import { randomBytes, writeAt } from "./_helpers/block_io.ts";
import { fsckClean, mount, whileFrozen } from "./_helpers/ext4.ts";
import {
  assertFiles,
  assertPrefix,
  type FileDigests,
  fileExists,
  writeRandomFile,
} from "./_helpers/files.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labTest } from "./_helpers/guest.ts";
import { run, sha256File, waitFor } from "./_helpers/sh.ts";
import {
  destroyLater,
  openImage,
  type TrackedFilesystem,
  trackedFilesystem,
} from "./_helpers/tracked_fs.ts";
import { AppendWriter, DdWriter } from "./_helpers/writers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const DISK_BYTES = 256 * MiB;
const STORAGE_LIMIT = 256 * MiB;

/** Files written and synced before the writers start; returns their checksums. */
async function writeBaseline(origin: string): Promise<FileDigests> {
  const digests: FileDigests = new Map();
  await writeRandomFile(origin, "a/one.bin", { sizeBytes: 1 * MiB, digests });
  await writeRandomFile(origin, "a/two.bin", { sizeBytes: 3 * MiB, digests });
  await writeRandomFile(origin, "b/three.bin", { sizeBytes: 200 * KiB, digests });
  await run("sync", []);
  return digests;
}

/** Starts the two writers on the origin and waits until both have written something. */
async function startWriters(fs: TrackedFilesystem) {
  const appender = new AppendWriter(`${fs.origin.dir}/append.log`);
  const dd = new DdWriter(`${fs.origin.dir}/stream.bin`, 1024);
  let stopped = false;
  const stop = async () => {
    if (stopped) return appender.bytesWritten;
    stopped = true;
    const appended = await appender.stop();
    await dd.stop();
    return appended;
  };
  fs.stack.defer(async () => void await stop());
  await waitFor(
    "the writers to get going",
    () => appender.bytesWritten >= 32 * KiB && dd.size() >= 512 * KiB,
    { timeoutMs: 60_000 },
  );
  return { appender, dd, stop };
}

labTest({
  name:
    "userspace: an image taken (fsfreeze) while writers run mounts ro,noload, checks clean and holds the files as of take",
  requires: ["service"],
  async fn() {
    await withCleanup(async (stack) => {
      const fs = await trackedFilesystem(stack, { name: "fsro", sizeBytes: DISK_BYTES });
      const origin = fs.origin.dir;
      const baseline = await writeBaseline(origin);
      const writers = await startWriters(fs);

      const created = await fs.client.snapshots.create({
        devices: [fs.device.id],
        diffStorage: { path: `${fs.work}/fsro.diff`, limitBytes: STORAGE_LIMIT },
      });
      destroyLater(fs, created.id);
      let appendedAtTake = 0;
      let streamAtTake = 0;
      const taken = await whileFrozen(origin, async () => {
        // Frozen: every write that completed is on the device, every other one waits.
        appendedAtTake = writers.appender.bytesWritten;
        streamAtTake = writers.dd.size();
        return await fs.client.snapshots.take(created.id);
      });
      assert.equal(taken.state, "taken");

      // The origin moves on: writers go on, a file is changed, one added, one removed.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      await writeAt(`${origin}/a/two.bin`, 0, randomBytes(256 * KiB));
      await writeRandomFile(origin, "c/after.bin", { sizeBytes: 2 * MiB });
      await Deno.remove(`${origin}/b/three.bin`);
      const appended = await writers.stop();
      await run("sync", []);
      const allAppended = AppendWriter.expected(appended);
      assert.deepEqual(await Deno.readFile(`${origin}/append.log`), allAppended);
      const stream = await Deno.readFile(`${origin}/stream.bin`);
      assert.ok(stream.length > streamAtTake, "dd went on writing after the take");

      const image = await openImage(fs, taken, { mountOptions: "ro,noload" });
      const imageDir = image.mounted!.dir;
      await assertFiles(imageDir, baseline, "the image");
      assert.ok(!(await fileExists(`${imageDir}/c/after.bin`)), "a file made after take is absent");
      await assertPrefix(`${imageDir}/append.log`, allAppended, {
        minBytes: appendedAtTake,
        what: "append.log on the image",
      });
      const streamOnImage = await assertPrefix(`${imageDir}/stream.bin`, stream, {
        minBytes: streamAtTake,
        what: "stream.bin on the image",
      });
      assert.equal(streamOnImage, streamAtTake, "stream.bin on the image has its size at freeze");
      await image.mounted!.unmount();
      await fsckClean(image.nbd.device);
    });
  },
});

labTest({
  name:
    "userspace: a writable image taken while writers run replays its journal, takes writes, checks clean; the origin is untouched",
  requires: ["service"],
  async fn() {
    await withCleanup(async (stack) => {
      const fs = await trackedFilesystem(stack, { name: "fsrw", sizeBytes: DISK_BYTES });
      const origin = fs.origin.dir;
      const baseline = await writeBaseline(origin);
      const writers = await startWriters(fs);

      const created = await fs.client.snapshots.create({
        devices: [fs.device.id],
        diffStorage: { path: `${fs.work}/fsrw.diff`, limitBytes: STORAGE_LIMIT },
        writable: true,
      });
      destroyLater(fs, created.id);
      const taken = await fs.client.snapshots.take(created.id);
      assert.equal(taken.writable, true);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const appended = await writers.stop();
      await run("sync", []);
      const allAppended = AppendWriter.expected(appended);
      const stream = await Deno.readFile(`${origin}/stream.bin`);
      const streamDigest = await sha256File(`${origin}/stream.bin`);

      // Read-write mount: ext4 replays the journal the image was taken with.
      const image = await openImage(fs, taken, { mountOptions: "rw" });
      const imageDir = image.mounted!.dir;
      await assertFiles(imageDir, baseline, "the image after journal replay");
      await assertPrefix(`${imageDir}/append.log`, allAppended, {
        minBytes: 0,
        what: "append.log on the image",
      });
      await assertPrefix(`${imageDir}/stream.bin`, stream, {
        minBytes: 0,
        what: "stream.bin on the image",
      });
      const onImage: FileDigests = new Map();
      await writeRandomFile(imageDir, "image-only.bin", { sizeBytes: 1 * MiB, digests: onImage });
      await writeAt(`${imageDir}/a/one.bin`, 64 * KiB, randomBytes(64 * KiB));
      onImage.set("a/one.bin", await sha256File(`${imageDir}/a/one.bin`));
      assert.notEqual(onImage.get("a/one.bin"), baseline.get("a/one.bin"));
      await Deno.remove(`${imageDir}/b/three.bin`);
      await run("sync", []);
      await image.mounted!.unmount();
      await fsckClean(image.nbd.device);
      {
        await using again = await mount(image.nbd.device, `${fs.work}/image`, { options: "ro" });
        await assertFiles(again.dir, onImage, "the image's own writes after a remount");
        assert.ok(!(await fileExists(`${again.dir}/b/three.bin`)), "removed on the image");
      }

      await assertFiles(origin, baseline, "the origin");
      assert.ok(
        !(await fileExists(`${origin}/image-only.bin`)),
        "the image's file is not on the origin",
      );
      assert.deepEqual(await Deno.readFile(`${origin}/append.log`), allAppended);
      assert.equal(await sha256File(`${origin}/stream.bin`), streamDigest);
      await fs.origin.unmount();
      await fsckClean(fs.nbd.device);
    });
  },
});
