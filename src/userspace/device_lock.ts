/**
 * One service per device: the userspace backend holds an exclusive flock
 * (src/lock/flock.ts) on every device it tracks, so that a second service
 * (another state folder, another port) cannot track the same file or block
 * device with its own CBT. The lock sits on a descriptor of its own, opened
 * read-only on the device's path and checked to be the same object as the
 * device's store (device and inode for a file, the device number for a
 * block device); it is released at detach and close, and by the kernel when
 * the process dies.
 *
 * @module
 */

import { closeSync, constants, fstatSync, openSync } from "node:fs";
import type { StoreIdentity } from "../engine/block_store.ts";
import { ServiceError } from "../errors.ts";
import { releaseFlock, tryFlock } from "../lock/flock.ts";

/** A held device lock. */
export class DeviceLock {
  #fd: number | undefined;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Locks the device opened from `path` as `store` (its descriptor and
   * identity). CONFLICT when another process holds the lock (another
   * service tracks it); IO when it cannot be opened.
   */
  static acquire(path: string, store: { fd: number; identity: StoreIdentity }): DeviceLock {
    const what = `Cannot attach ${path}`;
    const { identity } = store;
    let fd: number;
    try {
      fd = openSync(`/proc/self/fd/${store.fd}`, constants.O_RDONLY);
    } catch (error) {
      throw new ServiceError("IO", `${what}: cannot open it to lock it: ${error}`, {
        cause: error,
      });
    }
    try {
      const stat = fstatSync(fd);
      const same = identity.kind === "block"
        ? stat.isBlockDevice() && stat.rdev === identity.device
        : stat.dev === identity.device && stat.ino === identity.inode;
      if (!same) {
        throw new ServiceError("CONFLICT", `${what}: its descriptor names another object`);
      }
      if (!tryFlock(fd, what)) {
        throw new ServiceError(
          "CONFLICT",
          `${what}: another service tracks it (it holds the device's lock)`,
          { field: "path" },
        );
      }
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    return new DeviceLock(fd);
  }

  /** Releases the lock. Idempotent. */
  release(): void {
    if (this.#fd === undefined) return;
    releaseFlock(this.#fd);
    closeSync(this.#fd);
    this.#fd = undefined;
  }
}
