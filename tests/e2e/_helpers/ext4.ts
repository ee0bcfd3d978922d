/**
 * ext4 in the lab guest with e2fsprogs and util-linux: make, mount, freeze, check, and map which
 * blocks of the device hold what (debugfs `blocks`, dumpe2fs's group layout), so that cases can
 * compare a CBT with the blocks a file system really wrote.
 *
 * File systems are made with their inode tables and journal initialised at once
 * (`lazy_itable_init=0,lazy_journal_init=0`): otherwise the kernel's ext4lazyinit thread zeroes
 * them in the background after mount, writing all over the device at unpredictable times.
 *
 * @module
 */

import { run, type RunResult } from "./sh.ts";

/** Makes an ext4 file system on `device` (4 KiB blocks, no lazy initialisation). */
export async function mkfsExt4(device: string): Promise<void> {
  await run("mkfs.ext4", [
    "-q",
    "-F",
    "-b",
    "4096",
    "-E",
    "lazy_itable_init=0,lazy_journal_init=0",
    device,
  ]);
}

/** A mounted file system; dispose it (or call unmount) to unmount. */
export interface Mounted extends AsyncDisposable {
  /** The mount point. */
  readonly dir: string;
  /** Unmounts (once; later calls do nothing). */
  unmount(): Promise<void>;
}

/**
 * Mounts `device` on `dir` (created if missing) with mount `options` (e.g. "ro,noload").
 *
 * @throws {Error} when mount fails (its output is in the message).
 */
export async function mount(
  device: string,
  dir: string,
  options: { options?: string } = {},
): Promise<Mounted> {
  await Deno.mkdir(dir, { recursive: true });
  await run("mount", [...(options.options ? ["-o", options.options] : []), device, dir]);
  let mounted = true;
  const unmount = async () => {
    if (!mounted) return;
    mounted = false;
    await run("umount", [dir]);
  };
  return { dir, unmount, [Symbol.asyncDispose]: unmount };
}

/**
 * Runs `e2fsck -f -n` on `device` (check everything, change nothing).
 *
 * @throws {Error} with e2fsck's report when it finds anything (exit status not 0).
 */
export async function fsckClean(device: string): Promise<RunResult> {
  return await run("e2fsck", ["-f", "-n", device]);
}

/**
 * Freezes the file system mounted on `dir` (fsfreeze -f: dirty data and the journal are written,
 * the on-disk state is consistent, and writers block), runs `fn`, and thaws it again, also when
 * `fn` fails. What a backup agent does around a take when the snapshot layer cannot freeze the
 * file system itself.
 */
export async function whileFrozen<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  await run("fsfreeze", ["-f", dir]);
  try {
    return await fn();
  } finally {
    await run("fsfreeze", ["-u", dir]);
  }
}

/** A run of file-system blocks, inclusive. */
export interface BlockRun {
  /** First block. */
  first: number;
  /** Last block. */
  last: number;
}

async function debugfs(device: string, request: string): Promise<string> {
  const result = await run("debugfs", ["-R", request, device]);
  if (/not found|Could not|error/i.test(result.stderr.replace(/^debugfs [^\n]*\n/, ""))) {
    throw new Error(`debugfs -R "${request}" ${device}: ${result.stderr}`);
  }
  return result.stdout;
}

/**
 * Every block of the inode at `path` (a path in the file system, or `<N>` for inode N): data
 * blocks and extent-tree blocks, as debugfs `blocks` lists them. Read from the device: run it on
 * a file system that is unmounted, frozen, or a snapshot image.
 */
export async function inodeBlocks(device: string, path: string): Promise<number[]> {
  const text = await debugfs(device, `blocks "${path}"`);
  return text.split(/\s+/).filter((word) => word !== "").map(Number);
}

/** The numbers dumpe2fs -h reports: block size, block count, journal inode. */
export async function superblock(
  device: string,
): Promise<{ blockSize: number; blockCount: number; journalInode?: number }> {
  const text = (await run("dumpe2fs", ["-h", device])).stdout;
  const field = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text);
    return match ? Number(match[1]) : undefined;
  };
  return {
    blockSize: field("Block size") ?? 4096,
    blockCount: field("Block count") ?? 0,
    journalInode: field("Journal inode"),
  };
}

/**
 * The blocks of the static metadata of every block group, as dumpe2fs lists them: superblocks
 * and their backups, group descriptors, reserved GDT blocks, block and inode bitmaps, inode
 * tables.
 */
export async function groupMetadata(device: string): Promise<BlockRun[]> {
  const text = (await run("dumpe2fs", [device])).stdout;
  const pattern =
    /(?:superblock|Group descriptors|Reserved GDT blocks|Block bitmap|Inode bitmap|Inode table) at (\d+)(?:-(\d+))?/g;
  const runs: BlockRun[] = [];
  for (const match of text.matchAll(pattern)) {
    const first = Number(match[1]);
    runs.push({ first, last: match[2] === undefined ? first : Number(match[2]) });
  }
  if (runs.length === 0) throw new Error(`dumpe2fs ${device} listed no group metadata`);
  return runs;
}

/** One extent of a file: `length` blocks from logical block `logical` at block `physical`. */
export interface FileExtent {
  logical: number;
  physical: number;
  length: number;
}

/**
 * The data extents of the file at `path` on a mounted file system (filefrag -v, i.e. FIEMAP), in
 * file-system blocks. Sync first: blocks of delayed allocation have no place yet.
 */
export async function fileExtents(path: string): Promise<FileExtent[]> {
  const text = (await run("filefrag", ["-v", path])).stdout;
  const extents: FileExtent[] = [];
  for (const match of text.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+):/gm)) {
    extents.push({
      logical: Number(match[1]),
      physical: Number(match[2]),
      length: Number(match[3]),
    });
  }
  if (extents.length === 0 && !/ 0 extents found/.test(text)) {
    throw new Error(`Cannot read the extents of ${path} from filefrag:\n${text}`);
  }
  return extents;
}

/** The physical blocks holding logical blocks `first`..`last` of a file with `extents`. */
export function physicalBlocks(extents: FileExtent[], first: number, last: number): number[] {
  const blocks: number[] = [];
  for (let logical = first; logical <= last; logical++) {
    const extent = extents.find((e) => logical >= e.logical && logical < e.logical + e.length);
    if (!extent) throw new Error(`Logical block ${logical} is a hole`);
    blocks.push(extent.physical + logical - extent.logical);
  }
  return blocks;
}

/** Merges block numbers into sorted runs. */
export function toRuns(blocks: Iterable<number>): BlockRun[] {
  const sorted = [...new Set(blocks)].sort((a, b) => a - b);
  const runs: BlockRun[] = [];
  for (const block of sorted) {
    const last = runs.at(-1);
    if (last && block === last.last + 1) last.last = block;
    else runs.push({ first: block, last: block });
  }
  return runs;
}
