/**
 * From a failed ioctl to a ServiceError, through `errorFromErrno` of
 * `src/errors.ts` so that both backends raise the same codes (EBUSY and
 * EALREADY conflict, ENOSPC storage exhausted, EPERM and EACCES forbidden,
 * ENOENT/ESRCH/ENODEV not found, ...), plus the one judgement the table
 * cannot make: when EINVAL means a mismatched module.
 *
 * The EINVAL rule. ENOTTY always means the kernel does not know the request
 * (a different module, or a kernel without blk-filter), so it is a
 * MODULE_MISMATCH. EINVAL is a MODULE_MISMATCH on every request whose
 * arguments the driver builds and checks entirely by itself: VERSION,
 * COLLECT, TAKE, DESTROY, WAIT_EVENT, the filter attach (the driver has
 * already checked that the path is a block device) and the filter commands
 * CBTINFO, CBTMAP, SNAPSHOTADD and SNAPSHOTINFO (there the module's only
 * EINVAL is "optlen smaller than my struct", i.e. the layouts differ, or a
 * device that does not take blk-filter ioctls at all). EINVAL is the caller's
 * INVALID_ARGUMENT on the requests that carry a value the module judges:
 * SNAPSHOT_CREATE (the storage is not a file, block device or directory) and
 * CBTDIRTY (ranges the module refuses). Filter detach reports EINVAL when a
 * different filter owns the device, which is a CONFLICT.
 *
 * @module
 */

import { errnoName, errorFromErrno, ServiceError } from "../errors.ts";
import { formatRequest } from "./ioctl.ts";

/** errno values the kernel backend compares against (x86_64). */
export const KernelErrno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EINVAL: 22,
  ENOTTY: 25,
  ENOSPC: 28,
  ENODATA: 61,
  EALREADY: 114,
} as const;

/** What EINVAL means for a request (see the module comment). */
export type EinvalMeaning = "mismatch" | "argument" | "conflict";

/** What failed: the operation in words, the request and how to read EINVAL. */
export interface IoctlFailure {
  /** What could not be done, as the start of a sentence: "Cannot take snapshot 1234...". */
  what: string;
  /** The request number that failed. */
  request: number;
  /** The request's name for messages ("SNAPSHOT_TAKE"). */
  requestName: string;
  /** errno returned by the call. */
  errno: number;
  /** How EINVAL reads for this request; "mismatch" when omitted. */
  einval?: EinvalMeaning;
}

function mismatch(failure: IoctlFailure): ServiceError {
  const name = errnoName(failure.errno) ?? "EINVAL";
  return new ServiceError(
    "MODULE_MISMATCH",
    `${failure.what}: the kernel refused ${failure.requestName} (${
      formatRequest(failure.request)
    }) with ${name}, so the loaded blksnap module does not speak the interface this ` +
      `service was built for (ABI.md: blksnap 7 with blk-filter or bdevfilter)`,
    { errno: name },
  );
}

/** The ServiceError for a failed ioctl, following the EINVAL rule of this module. */
export function ioctlError(failure: IoctlFailure): ServiceError {
  const { errno } = failure;
  if (errno === KernelErrno.ENOTTY) return mismatch(failure);
  if (errno === KernelErrno.EINVAL) {
    const meaning = failure.einval ?? "mismatch";
    if (meaning === "mismatch") return mismatch(failure);
    if (meaning === "conflict") {
      return new ServiceError(
        "CONFLICT",
        `${failure.what}: ${failure.requestName} reports that another filter owns the device (EINVAL)`,
        { errno: "EINVAL" },
      );
    }
  }
  return errorFromErrno(errno, `${failure.what}: ${failure.requestName} failed`);
}

/** The ServiceError for a failed `open()` of `path`, saying what it was for. */
export function openError(errno: number, what: string, path: string): ServiceError {
  if (errno === KernelErrno.ENOENT) {
    return new ServiceError("NOT_FOUND", `${what}: ${path} does not exist (ENOENT)`, {
      errno: "ENOENT",
    });
  }
  return errorFromErrno(errno, `${what}: cannot open ${path}`);
}
