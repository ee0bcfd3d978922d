/**
 * Which block devices stand on a device, from sysfs: the device itself,
 * its partitions (`/sys/class/block/<disk>/<part>/partition` exists), and
 * what holds any of them (device-mapper, md, LVM: `/sys/class/block/<name>/holders/*`),
 * recursively. A file system on any of these lives on the device's blocks,
 * so it must be frozen when the device is snapshotted.
 *
 * All reads go through {@link SystemTree}, so tests run on a fixture tree.
 *
 * @module
 */

/** Read-only access to a tree of small text files: sysfs, procfs, or a fixture shaped like them. */
export interface SystemTree {
  /** The text of the file at `path` (relative to the root), trimmed; undefined when absent. */
  read(path: string): string | undefined;
  /** Entry names of the directory at `path` (relative to the root), sorted; empty when absent. */
  list(path: string): string[];
}

/** A {@link SystemTree} of the directory `root` ("/sys", "/proc", or a fixture). */
export function treeAt(root: string): SystemTree {
  return {
    read(path) {
      try {
        return Deno.readTextFileSync(`${root}/${path}`).trim();
      } catch {
        return undefined;
      }
    },
    list(path) {
      try {
        return [...Deno.readDirSync(`${root}/${path}`)].map((entry) => entry.name).sort();
      } catch {
        return [];
      }
    },
  };
}

/** A block device sysfs knows. */
export interface BlockNode {
  /** Kernel name ("vdb1", "dm-0"). */
  name: string;
  /** "major:minor". */
  deviceNumber: string;
  /** How it relates to the device asked about. */
  relation: "device" | "partition" | "holder";
}

/** The kernel name of the block device numbered `deviceNumber`, from /sys/dev/block. */
export function blockName(sysfs: SystemTree, deviceNumber: string): string | undefined {
  const uevent = sysfs.read(`dev/block/${deviceNumber}/uevent`);
  return uevent ? /^DEVNAME=(.+)$/m.exec(uevent)?.[1] : undefined;
}

/**
 * The device named `name` (a /sys/class/block entry), its partitions and
 * every holder above them, each once.
 */
export function devicesOn(sysfs: SystemTree, name: string): BlockNode[] {
  const found = new Map<string, BlockNode>();
  const visit = (node: string, relation: BlockNode["relation"]) => {
    if (found.has(node)) return;
    const deviceNumber = sysfs.read(`class/block/${node}/dev`);
    if (!deviceNumber) return;
    found.set(node, { name: node, deviceNumber, relation });
    for (const child of sysfs.list(`class/block/${node}`)) {
      if (sysfs.read(`class/block/${node}/${child}/partition`) !== undefined) {
        visit(child, "partition");
      }
    }
    for (const holder of sysfs.list(`class/block/${node}/holders`)) visit(holder, "holder");
  };
  visit(name, "device");
  return [...found.values()];
}
