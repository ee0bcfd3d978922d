/**
 * What the kernel driver opens before the module sees a path: a device to
 * attach and a difference storage, each opened once without following a
 * final symlink and verified by the real path of its descriptor (see
 * src/store/open_verified.ts for the whole rule). A storage is named to the
 * module as `/proc/self/fd/N`, so that the module opens the very object that
 * was checked. A device is named by its verified real path instead: the
 * out-of-tree module keeps the path given at attach and opens it again at
 * every take (VAL-7.0 diff_area.c, bdev_open of orig_bdevpath), long after
 * the descriptor is closed, so the driver checks after attach that the path
 * still names the same device number.
 *
 * @module
 */

import type { FileHandle } from "node:fs/promises";
import { errorFromErrno, ServiceError } from "../errors.ts";
import type { StoreIdentity } from "../engine/block_store.ts";
import { makeDeviceNumber } from "../store/dev_numbers.ts";
import { openVerified, type VerifyOpened } from "../store/open_verified.ts";
import { type DeviceNumber, type Libc, OpenFlags } from "./libc.ts";

/** A device opened (O_PATH) and verified, until {@link OpenedDevice.close}. */
export interface OpenedDevice {
  /** `/proc/self/fd/N` naming the device while it is open. */
  procPath: string;
  /** The real path of the opened device node (what the descriptor was verified by). */
  realPath: string;
  /** The device's number. */
  number: DeviceNumber;
  /** Closes the descriptor. */
  close(): void;
}

/**
 * Opens the block device at `path` through `libc` (O_PATH|O_NOFOLLOW),
 * passes its real path to `verify` and reads its number from the opened
 * object. NOT_FOUND when missing, INVALID_ARGUMENT for a symlink or
 * anything but a block device, FORBIDDEN from `verify`.
 */
export function openDevice(
  libc: Libc,
  path: string,
  options: { what: string; verify?: VerifyOpened },
): OpenedDevice {
  const flags = OpenFlags.O_PATH | OpenFlags.O_NOFOLLOW | OpenFlags.O_CLOEXEC;
  const opened = libc.open(path, flags);
  if (opened.result < 0) {
    const error = errorFromErrno(opened.errno, options.what);
    throw new ServiceError(error.code, error.message, { field: "path", errno: error.errno });
  }
  const fd = opened.result;
  const close = () => void libc.close(fd);
  try {
    const procPath = `/proc/self/fd/${fd}`;
    const realPath = libc.realPathOf(fd);
    if (realPath === undefined) {
      throw new ServiceError("IO", `${options.what}: cannot tell what was opened`);
    }
    options.verify?.(realPath);
    const number = libc.blockDeviceNumber(procPath);
    if (number === undefined) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `${options.what}: it is not a block device (a symlink is not followed)`,
        { field: "path" },
      );
    }
    return { procPath, realPath, number, close };
  } catch (error) {
    close();
    throw error;
  }
}

/** A difference storage opened and verified, until {@link OpenedStorage.close}. */
export interface OpenedStorage {
  /** `/proc/self/fd/N` naming the storage while it is open. */
  procPath: string;
  /** True when the file was created here (the driver removes it again). */
  created: boolean;
  /** The storage's identity (rdev for a block device). */
  identity: StoreIdentity;
  /** Closes the descriptor. */
  close(): Promise<void>;
}

/**
 * Opens (or creates, exclusively) the difference storage at `path` for the
 * module: a regular file, a block device or a directory. CONFLICT for an
 * existing non-empty regular file unless `overwrite` (it is then emptied);
 * errors of {@link openVerified} otherwise.
 */
export async function openStorage(
  path: string,
  options: { libc: Libc; what: string; verify?: VerifyOpened; overwrite?: boolean },
): Promise<OpenedStorage> {
  const opened = await openVerified(path, {
    create: true,
    directoryFile: true,
    pathOnly: true,
    verify: options.verify,
    purpose: "use as difference storage",
  });
  const handle: FileHandle = opened.handle;
  // The driver removes a created storage by name and identity (it may outlive this process).
  await opened.createdIn?.release();
  try {
    const info = await handle.stat();
    // The block-device test goes through the libc seam, as the module's own view does.
    const number = options.libc.blockDeviceNumber(opened.procPath);
    if (number === undefined && opened.kind === "file" && info.size > 0) {
      if (!options.overwrite) {
        throw new ServiceError(
          "CONFLICT",
          `${options.what}: ${path} is a non-empty file (${info.size} bytes); ` +
            "give overwrite to reuse it",
          { field: "diffStorage.path" },
        );
      }
      await Deno.truncate(opened.procPath, 0);
    }
    const identity: StoreIdentity = number !== undefined
      ? { kind: "block", device: makeDeviceNumber(number.major, number.minor), inode: 0 }
      : { kind: "file", device: info.dev, inode: info.ino };
    return {
      procPath: opened.procPath,
      created: opened.created,
      identity,
      close: () => handle.close().catch(() => {}),
    };
  } catch (error) {
    await handle.close().catch(() => {});
    throw error;
  }
}
