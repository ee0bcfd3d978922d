/**
 * Fixture trees shaped like sysfs and procfs for the consistency tests: a
 * temp folder where `files` are written (paths relative to it) and `links`
 * made, as /sys/class/block/vdb1 links to the partition's folder under its
 * disk.
 *
 * @module
 */

import { dirname, join } from "node:path";

/** Builds a tree under a new temp folder; returns its path. */
export async function makeTree(
  files: Record<string, string>,
  links: Record<string, string> = {},
): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "system-tree-" });
  for (const [path, text] of Object.entries(files)) {
    await Deno.mkdir(dirname(join(root, path)), { recursive: true });
    await Deno.writeTextFile(join(root, path), text);
  }
  for (const [path, target] of Object.entries(links)) {
    await Deno.mkdir(dirname(join(root, path)), { recursive: true });
    await Deno.symlink(join(root, target), join(root, path));
  }
  return root;
}

/**
 * A sysfs with disk `vdb` (254:16) holding partitions vdb1 (254:17) and
 * vdb2 (254:18), an LVM volume dm-0 (253:0) on vdb2, an unrelated disk vdc
 * (254:32), and nbd0 (43:0) with partition nbd0p1 (43:1).
 */
export const SYSFS_FILES: Record<string, string> = {
  "devices/vdb/dev": "254:16\n",
  "devices/vdb/size": "2097152\n",
  "devices/vdb/vdb1/dev": "254:17\n",
  "devices/vdb/vdb1/partition": "1\n",
  "devices/vdb/vdb2/dev": "254:18\n",
  "devices/vdb/vdb2/partition": "2\n",
  "devices/vdb/vdb2/holders/.keep": "",
  "devices/vdb/queue/dev-not-a-partition": "",
  "devices/dm-0/dev": "253:0\n",
  "devices/vdc/dev": "254:32\n",
  "devices/nbd0/dev": "43:0\n",
  "devices/nbd0/size": "2048\n",
  "devices/nbd0/nbd0p1/dev": "43:1\n",
  "devices/nbd0/nbd0p1/partition": "1\n",
  "dev/block/254:16/uevent": "MAJOR=254\nMINOR=16\nDEVNAME=vdb\nDEVTYPE=disk\n",
  "dev/block/254:32/uevent": "MAJOR=254\nMINOR=32\nDEVNAME=vdc\nDEVTYPE=disk\n",
};

/** The links of {@link SYSFS_FILES}: /sys/class/block and /sys/block entries, holders. */
export const SYSFS_LINKS: Record<string, string> = {
  "class/block/vdb": "devices/vdb",
  "class/block/vdb1": "devices/vdb/vdb1",
  "class/block/vdb2": "devices/vdb/vdb2",
  "class/block/dm-0": "devices/dm-0",
  "class/block/vdc": "devices/vdc",
  "class/block/nbd0": "devices/nbd0",
  "class/block/nbd0p1": "devices/nbd0/nbd0p1",
  "devices/vdb/vdb2/holders/dm-0": "devices/dm-0",
  "block/vdb": "devices/vdb",
  "block/vdc": "devices/vdc",
  "block/nbd0": "devices/nbd0",
};
