/**
 * Identity rules between what the service opens: its own state files, the
 * devices it tracks and the difference storages of its snapshots, compared
 * by device and inode (rdev for block devices), never by name.
 *
 * @module
 */

import { join } from "node:path";
import type { StoreIdentity } from "../engine/block_store.ts";

/**
 * Names in the state folder that belong to the service: the state files of
 * both backends (userspace-devices.json, userspace-snapshots.json,
 * kernel-driver.json), their temporary copies (`NAME.<uuid>.tmp`) and lock
 * files (`*.lock`); and in its `cbt/` folder the CBT records (`*.cbt`).
 */
export const SERVICE_FILE_NAME =
  /^(userspace-devices|userspace-snapshots|kernel-driver)\.json(\..+\.tmp)?$|\.lock$/;

/** Names of the CBT records in the state folder's `cbt/` folder, and their temporary copies. */
const CBT_RECORD_NAME = /\.cbt(\..+\.tmp)?$/;

/** A file of the service's own and its identity. */
export interface ServiceFile {
  /** Its path. */
  path: string;
  /** Its identity. */
  identity: StoreIdentity;
}

/** True when `a` and `b` are the same object (the same file, or the same block device). */
export function sameObject(a: StoreIdentity, b: StoreIdentity): boolean {
  return a.kind === b.kind && a.device === b.device && a.inode === b.inode;
}

/**
 * The service's own files in `stateDir` (state files, their temporary
 * copies and lock files), with their identities; none when the folder is
 * missing or not given.
 */
export async function serviceFiles(stateDir: string | undefined): Promise<ServiceFile[]> {
  if (stateDir === undefined) return [];
  const found: ServiceFile[] = [];
  const scan = async (folder: string, names: RegExp) => {
    try {
      for await (const entry of Deno.readDir(folder)) {
        if (!entry.isFile || !names.test(entry.name)) continue;
        const path = join(folder, entry.name);
        const info = await Deno.lstat(path).catch(() => undefined);
        if (info?.isFile && info.ino !== null) {
          found.push({ path, identity: { kind: "file", device: info.dev, inode: info.ino } });
        }
      }
    } catch {
      // no such folder yet: nothing of the service's own to protect there
    }
  };
  await scan(stateDir, SERVICE_FILE_NAME);
  await scan(join(stateDir, "cbt"), CBT_RECORD_NAME);
  return found;
}

/** The service file that `identity` is, if any. */
export async function findServiceFile(
  stateDir: string | undefined,
  identity: StoreIdentity,
): Promise<ServiceFile | undefined> {
  return (await serviceFiles(stateDir)).find((file) => sameObject(file.identity, identity));
}
