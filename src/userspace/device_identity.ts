/**
 * Whether a device is still the one a CBT record describes: the same path,
 * kind, device and inode (a file) or device number (a block device), the
 * same size, and for a file closed cleanly the same modification time (a
 * file written while the service was stopped has a newer one). A record the
 * service cannot vouch for makes the device start a new CBT generation.
 *
 * @module
 */

import type { FileStore } from "../store/file_store.ts";
import type { CbtRecord, DeviceIdentityRecord } from "./cbt_journal.ts";

/** The identity of the device open as `store` from `path`, with the file's mtime. */
export async function deviceIdentity(
  path: string,
  store: FileStore,
): Promise<DeviceIdentityRecord> {
  const kind = store.identity.kind === "block" ? "block" : "file";
  const identity: DeviceIdentityRecord = {
    path,
    kind,
    device: store.identity.device,
    inode: store.identity.inode,
    sizeBytes: store.capacityBytes,
  };
  if (kind === "file") {
    const info = await Deno.stat(path);
    if (info.dev === store.identity.device && info.ino === store.identity.inode && info.mtime) {
      identity.mtimeMs = info.mtime.getTime();
    }
  }
  return identity;
}

/** Why `record` cannot be trusted for the device that is now `current`, or undefined when it can. */
export function distrust(record: CbtRecord, current: DeviceIdentityRecord): string | undefined {
  const saved = record.identity;
  if (!saved || saved.path !== current.path) return "the record is for another path";
  if (saved.kind !== current.kind || saved.device !== current.device) {
    return `the device changed (was ${saved.kind} ${saved.device}:${saved.inode})`;
  }
  if (saved.kind === "file" && saved.inode !== current.inode) return "the file was replaced";
  if (saved.sizeBytes !== current.sizeBytes || record.state.capacityBytes !== current.sizeBytes) {
    return `its size changed from ${saved.sizeBytes} to ${current.sizeBytes} bytes`;
  }
  if (record.clean && saved.kind === "file" && saved.mtimeMs !== current.mtimeMs) {
    return "the file was modified while the service was stopped";
  }
  return undefined;
}
