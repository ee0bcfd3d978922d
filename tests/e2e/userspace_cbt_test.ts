/**
 * The userspace backend's CBT under a real file system: after a first take, files are written on
 * the ext4 of /dev/nbd0 (two new files and an in-place overwrite of part of an old one), then a
 * second snapshot is taken (file system frozen around the take). The changes since the first
 * take, from the API (`.../changes`) and from the image export's `qemu:dirty-bitmap:cbt` context
 * (nbdinfo --map), must agree, and:
 *
 * - cover every block the file system put the written data in (filefrag -v, i.e. FIEMAP);
 * - contain nothing else but file-system metadata: each changed tracking block (64 KiB) must
 *   hold a block of the written data, or of the file system's metadata as the image (the state
 *   at the second take) describes it: the group metadata dumpe2fs lists (superblocks, group
 *   descriptors, bitmaps, inode tables), the journal, the directories, the written files' own
 *   extent blocks, and the orphan file when there is one;
 * - and stay within a byte bound: changedBytes <= the written extents rounded out to tracking
 *   blocks + 32 tracking blocks (2 MiB) of metadata. Between the takes the file system writes
 *   its journal (a few commits, each a few dozen 4 KiB blocks), the block and inode bitmaps and
 *   the inode table blocks of the new inodes (packed in group 0 by flex_bg), a directory block
 *   per directory touched, group descriptors and the superblock: about a dozen tracking blocks;
 *   32 leaves room without letting a stray megabyte of data pass.
 */

import assert from "node:assert/strict";
import { randomBytes, writeAt } from "./_helpers/block_io.ts";
import {
  type BlockRun,
  fileExtents,
  groupMetadata,
  inodeBlocks,
  physicalBlocks,
  superblock,
  toRuns,
  whileFrozen,
} from "./_helpers/ext4.ts";
import { writeRandomFile } from "./_helpers/files.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labTest } from "./_helpers/guest.ts";
import { run } from "./_helpers/sh.ts";
import { destroyLater, openImage, trackedFilesystem } from "./_helpers/tracked_fs.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Changed tracking blocks allowed to hold only metadata (see the bound above). */
const METADATA_BLOCKS_ALLOWED = 32;

interface Extent {
  offset: number;
  length: number;
}

/** The extents flagged dirty (type bit 0) in `nbdinfo --map --json` output, merged. */
function dirtyExtents(json: string): Extent[] {
  const entries = JSON.parse(json) as { offset: number; length: number; type: number }[];
  const merged: Extent[] = [];
  for (const entry of entries) {
    if ((entry.type & 1) === 0) continue;
    const last = merged.at(-1);
    if (last && last.offset + last.length === entry.offset) last.length += entry.length;
    else merged.push({ offset: entry.offset, length: entry.length });
  }
  return merged;
}

/** Tracking blocks (indexes) that the byte extents cover. */
function trackingBlocks(extents: Extent[], blockSize: number): Set<number> {
  const blocks = new Set<number>();
  for (const { offset, length } of extents) {
    for (let b = Math.floor(offset / blockSize); b * blockSize < offset + length; b++) {
      blocks.add(b);
    }
  }
  return blocks;
}

labTest({
  name:
    "userspace: after a second take the CBT covers the blocks written in between and nothing outside them but metadata",
  requires: ["service"],
  async fn() {
    await withCleanup(async (stack) => {
      const fs = await trackedFilesystem(stack, { name: "cbt", sizeBytes: 256 * MiB });
      const origin = fs.origin.dir;
      await writeRandomFile(origin, "base/old.bin", { sizeBytes: 4 * MiB });
      await writeRandomFile(origin, "base/other.bin", { sizeBytes: 2 * MiB });
      await run("sync", []);

      const first = await fs.client.snapshots.create({
        devices: [fs.device.id],
        diffStorage: { path: `${fs.work}/first.diff`, limitBytes: 256 * MiB },
      });
      destroyLater(fs, first.id);
      await whileFrozen(origin, () => fs.client.snapshots.take(first.id));
      await fs.client.snapshots.destroy(first.id);
      const { generationId } = await fs.client.cbt.info(fs.device.id);

      // Between the takes: two new files and 256 KiB overwritten in place in an old one.
      await writeRandomFile(origin, "new/five.bin", { sizeBytes: 5 * MiB });
      await writeRandomFile(origin, "new/odd.bin", { sizeBytes: 2 * MiB + 12 * KiB });
      await writeAt(`${origin}/base/old.bin`, 1 * MiB, randomBytes(256 * KiB));
      await run("sync", []);

      const second = await fs.client.snapshots.create({
        devices: [fs.device.id],
        diffStorage: { path: `${fs.work}/second.diff`, limitBytes: 256 * MiB },
      });
      destroyLater(fs, second.id);
      const taken = await whileFrozen(origin, () => fs.client.snapshots.take(second.id));

      const { blockSize } = await superblock(fs.nbd.device);
      const written = new Set<number>([
        ...(await fileExtents(`${origin}/new/five.bin`)).flatMap((e) =>
          Array.from({ length: e.length }, (_, i) => e.physical + i)
        ),
        ...(await fileExtents(`${origin}/new/odd.bin`)).flatMap((e) =>
          Array.from({ length: e.length }, (_, i) => e.physical + i)
        ),
        ...physicalBlocks(
          await fileExtents(`${origin}/base/old.bin`),
          MiB / blockSize,
          (MiB + 256 * KiB) / blockSize - 1,
        ),
      ]);

      const changes = await fs.client.images.changes(second.id, fs.device.id);
      assert.equal(changes.generationId, generationId, "the generation stays");
      assert.equal(changes.changesNumber, 2);
      assert.equal(changes.since, 1);
      const trackingSize = changes.blockSizeBytes;

      // The image export's dirty-bitmap context says the same.
      const locator = taken.devices[0].locator!;
      const map = await run("nbdinfo", ["--map=qemu:dirty-bitmap:cbt", "--json", locator]);
      assert.deepEqual(dirtyExtents(map.stdout), changes.extents, "nbdinfo --map and /changes");

      // Every written block is covered.
      const changed = trackingBlocks(changes.extents, trackingSize);
      const perTracking = trackingSize / blockSize;
      const missed = [...written].filter((b) => !changed.has(Math.floor(b / perTracking)));
      assert.deepEqual(missed, [], "written file-system blocks outside the CBT's changes");

      // Nothing else but metadata, as the image (the state at take) describes it.
      const image = await openImage(fs, taken, { mount: false });
      const device = image.nbd.device;
      const sb = await superblock(device);
      const metadata: BlockRun[] = [...(await groupMetadata(device))];
      const inodes = ["/", "/base", "/new", "/new/five.bin", "/new/odd.bin", "/base/old.bin"];
      if (sb.journalInode !== undefined) inodes.push(`<${sb.journalInode}>`);
      const features = (await run("dumpe2fs", ["-h", device])).stdout;
      if (/orphan_file/.test(features)) inodes.push("<12>");
      for (const path of inodes) metadata.push(...toRuns(await inodeBlocks(device, path)));
      const holdsWrittenOrMetadata = (tracking: number) => {
        const first = tracking * perTracking;
        const last = first + perTracking - 1;
        for (let b = first; b <= last; b++) if (written.has(b)) return "data";
        return metadata.some((r) => r.first <= last && r.last >= first) ? "metadata" : undefined;
      };
      const kinds = [...changed].map((t) => [t, holdsWrittenOrMetadata(t)] as const);
      const stray = kinds.filter(([, kind]) => kind === undefined).map(([t]) => t);
      if (stray.length > 0) {
        const blocks = stray.slice(0, 4).map((t) => t * perTracking).join(" ");
        const owners = await run("debugfs", ["-R", `icheck ${blocks}`, device]);
        assert.fail(
          `changed tracking blocks hold neither written data nor metadata: ${stray.join(", ")}\n` +
            owners.stdout,
        );
      }
      const metadataOnly = kinds.filter(([, kind]) => kind === "metadata").length;
      const writtenRounded = trackingBlocks(
        toRuns(written).map((r) => ({
          offset: r.first * blockSize,
          length: (r.last - r.first + 1) * blockSize,
        })),
        trackingSize,
      ).size * trackingSize;
      console.log(
        `CBT: ${changes.changedBytes} bytes changed in ${changed.size} tracking blocks ` +
          `(${metadataOnly} metadata only); written ${written.size * blockSize} bytes, ` +
          `${writtenRounded} rounded to tracking blocks`,
      );
      assert.ok(metadataOnly <= METADATA_BLOCKS_ALLOWED, `${metadataOnly} metadata-only blocks`);
      assert.ok(
        changes.changedBytes <= writtenRounded + METADATA_BLOCKS_ALLOWED * trackingSize,
        `changedBytes ${changes.changedBytes} > ${writtenRounded} + the metadata allowance`,
      );
    });
  },
});
