/**
 * Freezing a mounted file system: `ioctl(FIFREEZE)` on a descriptor of its
 * mount point flushes it and blocks new writes until `ioctl(FITHAW)`
 * (what `fsfreeze(8)` does). Behind {@link FsFreezer} so the take wrapper
 * can be tested with a recording fake as well as for real on a loop mount.
 *
 * FIFREEZE writes the file system's dirty data out before it returns, and
 * for the userspace backend that data goes to this very service over NBD
 * (a host mount of /dev/nbdX): the ioctl therefore runs off the main
 * thread, on the kernel backend's worker pool (src/kernel/blocking_ioctl.ts),
 * so the service keeps serving the writes it waits for. `open` and `close`
 * go through the one libc table (src/kernel/libc.ts), opened lazily.
 *
 * @module
 */

import { Errno, errorFromErrno } from "../errors.ts";
import { _IOWR } from "../kernel/ioctl.ts";
import { type BlockingIoctl, WorkerIoctl } from "../kernel/blocking_ioctl.ts";
import { type Libc, OpenFlags, realLibc } from "../kernel/libc.ts";
import { i32le, struct } from "../layout/mod.ts";

/** `_IOWR('X', 119, int)`. */
export const FIFREEZE = _IOWR("X", 119, struct({ value: i32le }));
/** `_IOWR('X', 120, int)`. */
export const FITHAW = _IOWR("X", 120, struct({ value: i32le }));

const O_DIRECTORY = 0o200000;

/** Freezes and thaws file systems by mount point. */
export interface FsFreezer {
  /**
   * Freezes the file system mounted at `mountPoint`. CONFLICT (EBUSY) when it
   * is frozen already, NOT_SUPPORTED (EOPNOTSUPP) when it cannot be frozen.
   */
  freeze(mountPoint: string): Promise<void>;
  /** Thaws it; INVALID_ARGUMENT (EINVAL) when it was not frozen. */
  thaw(mountPoint: string): Promise<void>;
  /** Releases the threads. */
  close(): void;
}

async function call(
  system: { libc: Libc; ioctl: BlockingIoctl },
  mountPoint: string,
  request: { number: number; what: string },
): Promise<void> {
  const { libc, ioctl } = system;
  const opened = libc.open(mountPoint, OpenFlags.O_RDONLY | O_DIRECTORY | OpenFlags.O_CLOEXEC);
  if (opened.result < 0) {
    throw errorFromErrno(opened.errno, `Cannot open ${mountPoint} to ${request.what} it`);
  }
  try {
    const { result, errno } = await ioctl.call(opened.result, request.number, new Uint8Array(4));
    if (result < 0) {
      const detail = errno === Errno.EOPNOTSUPP
        ? `Cannot ${request.what} ${mountPoint}: its file system does not support freezing`
        : `Cannot ${request.what} ${mountPoint}`;
      throw errorFromErrno(errno, detail);
    }
  } finally {
    libc.close(opened.result);
  }
}

/** The real freezer: FIFREEZE and FITHAW through `libc` and worker threads. */
export function ioctlFreezer(
  system: { libc?: Libc; ioctl?: BlockingIoctl } = {},
): FsFreezer {
  const libc = system.libc ?? realLibc();
  const ioctl = system.ioctl ?? new WorkerIoctl({ maxIdle: 1 });
  return {
    freeze: (mountPoint) => call({ libc, ioctl }, mountPoint, { number: FIFREEZE, what: "freeze" }),
    thaw: (mountPoint) => call({ libc, ioctl }, mountPoint, { number: FITHAW, what: "thaw" }),
    close: () => ioctl.close(),
  };
}
