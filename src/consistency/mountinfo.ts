/**
 * `/proc/self/mountinfo` (proc(5)): one line per mount, e.g.
 * `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
 * Field 3 is the `st_dev` of the mounted file system, which for a file
 * system on a block device is that device's number; the optional fields end
 * at the lone `-`. Paths escape space, tab, newline and backslash as octal
 * (`\040`).
 *
 * @module
 */

/** One mount. */
export interface MountEntry {
  /** Unique mount id. */
  mountId: number;
  /** Major and minor of the file system's device ("8:1"). */
  deviceNumber: string;
  /** Where it is mounted. */
  mountPoint: string;
  /** The root of the mount within the file system ("/" unless a bind mount of a subtree). */
  root: string;
  /** File system type ("ext4"). */
  fsType: string;
  /** Mount source ("/dev/vdb1"). */
  source: string;
  /** Per-mount options ("rw,relatime"). */
  mountOptions: string;
}

function unescape(text: string): string {
  return text.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

/** Parses mountinfo text; lines that do not have the format are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const separator = fields.indexOf("-", 6);
    if (fields.length < 10 || separator < 0 || fields.length < separator + 3) continue;
    if (!/^\d+:\d+$/.test(fields[2])) continue;
    entries.push({
      mountId: Number(fields[0]),
      deviceNumber: fields[2],
      root: unescape(fields[3]),
      mountPoint: unescape(fields[4]),
      mountOptions: fields[5],
      fsType: fields[separator + 1],
      source: unescape(fields[separator + 2]),
    });
  }
  return entries;
}

/** The mount table of this process (`/proc/self/mountinfo`, or `path`). */
export async function readMountinfo(path = "/proc/self/mountinfo"): Promise<MountEntry[]> {
  return parseMountinfo(await Deno.readTextFile(path));
}
