/**
 * The lab's scratch disk (a zeroed virtio disk, `LAB_SCRATCH_DISK`, 2 GiB), split once per guest
 * run into three GPT partitions so that cases of both backends have what they need:
 *
 * | partition | size    | use                                                                  |
 * | --------- | ------- | -------------------------------------------------------------------- |
 * | 1         | 64 MiB  | the kernel cases' origin device (a virtio disk's partition)          |
 * | 2         | 64 MiB  | a spare block device: the kernel cases' block-device storage         |
 * | 3         | the rest | ext4 mounted at {@link filesMount}: disk files for userspace cases |
 *
 * The first case that asks partitions the disk (sfdisk) and makes the file system; later cases
 * (also from other test files) find the partitions and the mount and reuse them. Each case works
 * in a folder of its own under the mount and removes it.
 *
 * @module
 */

import { labEnv } from "./guest.ts";
import { exists, run, waitFor } from "./sh.ts";

/** Where the file partition is mounted (under /var/tmp, which the service's cases allow). */
export const filesMount = "/var/tmp/lab-scratch";

/** Bytes in a MiB. */
const MiB = 1024 * 1024;

/** Sizes of the two raw partitions. */
export const originBytes = 64 * MiB;
export const spareBytes = 64 * MiB;

/** The partitions of the scratch disk. */
export interface ScratchPartitions {
  /** The whole disk, e.g. /dev/vdd. */
  readonly disk: string;
  /** Partition 1 ({@link originBytes}): the kernel cases' origin. */
  readonly origin: string;
  /** Partition 2 ({@link spareBytes}): a spare block device. */
  readonly spare: string;
  /** Partition 3: ext4 for files. */
  readonly files: string;
}

const layout = `label: gpt
size=${originBytes / MiB}MiB, name=lab-origin
size=${spareBytes / MiB}MiB, name=lab-spare
name=lab-files
`;

/**
 * The scratch disk's partitions, made on first use.
 *
 * @throws {Error} outside the lab guest, or when sfdisk fails.
 */
export async function scratchPartitions(): Promise<ScratchPartitions> {
  const link = labEnv().scratchDisk;
  if (link === undefined) throw new Error("The lab gave no scratch disk (LAB_SCRATCH_DISK)");
  const disk = await Deno.realPath(link);
  const part = (n: number) => `${disk}${/\d$/.test(disk) ? "p" : ""}${n}`;
  const partitions = { disk, origin: part(1), spare: part(2), files: part(3) };
  if (!exists(partitions.files)) {
    await run("sfdisk", ["--quiet", "--wipe", "always", disk], {
      stdin: new TextEncoder().encode(layout),
    });
    await run("udevadm", ["settle"], { allowFailure: true });
    await waitFor(`${partitions.files} to appear`, () => exists(partitions.files));
  }
  const size = async (path: string) =>
    Number((await run("blockdev", ["--getsize64", path])).stdout.trim());
  if (
    await size(partitions.origin) !== originBytes || await size(partitions.spare) !== spareBytes
  ) {
    throw new Error(`${disk} has partitions of other sizes than this helper makes`);
  }
  return partitions;
}

async function isMounted(dir: string): Promise<boolean> {
  const mounts = await Deno.readTextFile("/proc/mounts");
  return mounts.split("\n").some((line) => line.split(" ")[1] === dir);
}

/**
 * The ext4 file system on partition 3, mounted at {@link filesMount} (made and mounted on first
 * use). Returns the mount point.
 */
export async function scratchFiles(): Promise<string> {
  const { files } = await scratchPartitions();
  if (await isMounted(filesMount)) return filesMount;
  const type = await run("blkid", ["-o", "value", "-s", "TYPE", files], { allowFailure: true });
  if (type.stdout.trim() !== "ext4") {
    await run("mkfs.ext4", [
      "-q",
      "-F",
      "-L",
      "lab-files",
      "-E",
      "lazy_itable_init=0,lazy_journal_init=0",
      files,
    ]);
  }
  await Deno.mkdir(filesMount, { recursive: true });
  await run("mount", [files, filesMount]);
  return filesMount;
}
