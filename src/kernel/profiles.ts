/**
 * The two ways to reach the blksnap module (ABI.md): which control device
 * exists decides the profile, VERSION confirms that the module answers, and
 * a {@link FilterChannel} hides where the filter requests go.
 *
 * - `upstream` (/dev/blksnap-control): BLKFILTER_* ioctls on the block
 *   device's own fd; the channel opens the device read-only for each request
 *   and closes it afterwards, so the service holds no device open.
 * - `outoftree` (/dev/veeamblksnap): BDEVFILTER_* ioctls on the misc device
 *   /dev/bdevfilter, with the target device's path in the argument; the
 *   channel keeps /dev/bdevfilter open until it is closed.
 *
 * When both control devices exist, `upstream` wins (the kernel's own filter
 * layer). VERSION is not compared against a minimum: the module's headers ask
 * callers not to tie behaviour to it, and requests of another interface fail
 * with ENOTTY/EINVAL, which the driver reports as MODULE_MISMATCH.
 *
 * On `upstream`, VERSION cannot tell the lk6.15 numbering of the filter
 * requests (the one spoken here) from the older v6/v7 one, so detection also
 * probes one block device of the device directory without changing anything
 * (numbering.ts) and refuses a v6/v7 kernel, or one without blk-filter, with
 * MODULE_MISMATCH naming what it found. When the directory has no usable block
 * device, the channel probes the first device it is sent to, before the
 * request.
 *
 * @module
 */

import type { KernelProfile } from "../driver.ts";
import { ServiceError } from "../errors.ts";
import {
  BDEVFILTER_ATTACH,
  BDEVFILTER_CTL,
  BDEVFILTER_DETACH,
  BdevfilterCtl,
  BdevfilterName,
  BLKFILTER_ATTACH,
  BLKFILTER_CTL,
  BLKFILTER_DETACH,
  BlkfilterAttach,
  BlkfilterCtl,
  BlkfilterDetach,
  BLKSNAP_FILTER_NAME,
  BlksnapVersion,
  IOCTL_BLKSNAP_VERSION,
  requestName,
} from "./abi.ts";
import { ioctlError, KernelErrno, openError } from "./errno.ts";
import { cStringBytes, type Libc, OpenFlags, type SyscallResult } from "./libc.ts";
import { numberingError, probeNumbering, probeSomeDevice, readNumbering } from "./numbering.ts";

/** Control device of the upstream profile, relative to the device directory. */
export const UPSTREAM_CONTROL = "blksnap-control";
/** Control device of the out-of-tree profile. */
export const OUTOFTREE_CONTROL = "veeamblksnap";
/** The bdevfilter misc device of the out-of-tree profile. */
export const BDEVFILTER_DEVICE = "bdevfilter";

/** Where a profile's devices live. */
export interface ProfileOptions {
  /** Directory of device nodes; `/dev` by default (tests point it at a temp dir). */
  devDir?: string;
}

/** The outcome of one filter request. */
export interface FilterResult extends SyscallResult {
  /** The request number sent. */
  request: number;
}

/** Where filter requests for one block device go. */
export interface FilterChannel {
  /** Attaches the blksnap filter to the device at `path`. */
  attach(path: string): FilterResult;
  /** Detaches the blksnap filter. */
  detach(path: string): FilterResult;
  /** Sends filter command `cmd` with `opt` as its in/out option buffer. */
  ctl(path: string, cmd: number, opt: Uint8Array): FilterResult;
  /** Releases what the channel holds open. */
  close(): void;
}

/** What detection found. */
export interface DetectedProfile {
  /** The profile. */
  profile: KernelProfile;
  /** The control device's path. */
  controlPath: string;
  /** The open control device (O_RDONLY). */
  controlFd: number;
  /** VERSION as "major.minor.revision.build". */
  moduleVersion: string;
  /** Where filter requests go. */
  filter: FilterChannel;
}

/** Joins the device directory and a node name. */
export function devicePath(name: string, options: ProfileOptions = {}): string {
  const dir = (options.devDir ?? "/dev").replace(/\/+$/, "");
  return `${dir}/${name}`;
}

/**
 * Which profile's control device exists, checked with `Deno.stat` only (no
 * FFI): the cheap probe for `serve --backend auto`. Undefined when neither does.
 */
export async function probeProfile(
  options: ProfileOptions = {},
): Promise<KernelProfile | undefined> {
  for (
    const [profile, name] of [["upstream", UPSTREAM_CONTROL], [
      "outoftree",
      OUTOFTREE_CONTROL,
    ]] as const
  ) {
    try {
      await Deno.stat(devicePath(name, options));
      return profile;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return undefined;
}

const openFlags = OpenFlags.O_RDONLY | OpenFlags.O_CLOEXEC;

function tryOpen(libc: Libc, path: string): number | undefined {
  const { result, errno } = libc.open(path, openFlags);
  if (result >= 0) return result;
  if (errno === KernelErrno.ENOENT) return undefined;
  if (errno === KernelErrno.EACCES || errno === KernelErrno.EPERM) {
    throw new ServiceError(
      "FORBIDDEN",
      `Cannot use the blksnap module: ${path} exists but cannot be opened (run the service as root)`,
      { errno: errno === KernelErrno.EPERM ? "EPERM" : "EACCES" },
    );
  }
  throw openError(errno, "Cannot use the blksnap module", path);
}

function readVersion(libc: Libc, fd: number, controlPath: string): string {
  const arg = new Uint8Array(BlksnapVersion.size);
  const { result, errno } = libc.ioctl(fd, IOCTL_BLKSNAP_VERSION, arg);
  if (result < 0) {
    throw ioctlError({
      what: `Cannot use the blksnap module through ${controlPath}`,
      request: IOCTL_BLKSNAP_VERSION,
      requestName: "VERSION",
      errno,
    });
  }
  const v = BlksnapVersion.decode(arg);
  return `${v.major}.${v.minor}.${v.revision}.${v.build}`;
}

/**
 * Finds the module: opens the control device of either profile, asks
 * VERSION, checks the upstream numbering, and sets up the filter channel.
 * UNAVAILABLE naming what is missing when no control device exists;
 * MODULE_MISMATCH when VERSION fails with ENOTTY or EINVAL, or when the
 * upstream kernel speaks the v6/v7 numbering (or no filter requests at all);
 * FORBIDDEN without permission.
 */
export function detectProfile(libc: Libc, options: ProfileOptions = {}): DetectedProfile {
  const upstreamPath = devicePath(UPSTREAM_CONTROL, options);
  const outoftreePath = devicePath(OUTOFTREE_CONTROL, options);
  let profile: KernelProfile = "upstream";
  let controlPath = upstreamPath;
  let controlFd = tryOpen(libc, upstreamPath);
  if (controlFd === undefined) {
    profile = "outoftree";
    controlPath = outoftreePath;
    controlFd = tryOpen(libc, outoftreePath);
  }
  if (controlFd === undefined) {
    throw new ServiceError(
      "UNAVAILABLE",
      `${outoftreePath} and ${upstreamPath} are absent: load bdevfilter and veeamblksnap, ` +
        `or the upstream blksnap module`,
      { errno: "ENOENT" },
    );
  }
  try {
    const moduleVersion = readVersion(libc, controlFd, controlPath);
    let filter: FilterChannel;
    if (profile === "upstream") {
      const probed = probeSomeDevice(libc, (options.devDir ?? "/dev").replace(/\/+$/, ""));
      if (probed !== undefined) {
        const refusal = numberingError(readNumbering(probed.answers), {
          controlPath,
          device: probed.path,
        });
        if (refusal !== undefined) throw refusal;
      }
      filter = new UpstreamChannel(libc, { controlPath, numberingChecked: probed !== undefined });
    } else {
      filter = OutOfTreeChannel.open(libc, devicePath(BDEVFILTER_DEVICE, options));
    }
    return { profile, controlPath, controlFd, moduleVersion, filter };
  } catch (error) {
    libc.close(controlFd);
    throw error;
  }
}

/** Upstream: BLKFILTER_* on the device's own fd, opened per request. */
class UpstreamChannel implements FilterChannel {
  #libc: Libc;
  #controlPath: string;
  #numberingChecked: boolean;

  constructor(libc: Libc, options: { controlPath: string; numberingChecked: boolean }) {
    this.#libc = libc;
    this.#controlPath = options.controlPath;
    this.#numberingChecked = options.numberingChecked;
  }

  /** The numbering check that detection could not make (no block device to probe then). */
  #checkNumbering(path: string): void {
    if (this.#numberingChecked) return;
    const answers = probeNumbering(this.#libc, path);
    if (answers === undefined) return;
    const refusal = numberingError(readNumbering(answers), {
      controlPath: this.#controlPath,
      device: path,
    });
    if (refusal !== undefined) throw refusal;
    this.#numberingChecked = true;
  }

  #onDevice(path: string, request: number, arg: Uint8Array): FilterResult {
    this.#checkNumbering(path);
    const opened = this.#libc.open(path, openFlags);
    if (opened.result < 0) {
      throw openError(opened.errno, `Cannot send ${requestName(request)} to ${path}`, path);
    }
    try {
      return { ...this.#libc.ioctl(opened.result, request, arg), request };
    } finally {
      this.#libc.close(opened.result);
    }
  }

  attach(path: string): FilterResult {
    const arg = BlkfilterAttach.encode({ name: BLKSNAP_FILTER_NAME, opt: 0, optlen: 0 });
    return this.#onDevice(path, BLKFILTER_ATTACH, arg);
  }

  detach(path: string): FilterResult {
    const arg = BlkfilterDetach.encode({ name: BLKSNAP_FILTER_NAME });
    return this.#onDevice(path, BLKFILTER_DETACH, arg);
  }

  ctl(path: string, cmd: number, opt: Uint8Array): FilterResult {
    const arg = BlkfilterCtl.encode({
      name: BLKSNAP_FILTER_NAME,
      cmd,
      optlen: opt.length,
      opt: this.#libc.pointerOf(opt),
    });
    const result = this.#onDevice(path, BLKFILTER_CTL, arg);
    retain(opt);
    return result;
  }

  close(): void {}
}

/** Out-of-tree: BDEVFILTER_* on /dev/bdevfilter with the device path in the argument. */
class OutOfTreeChannel implements FilterChannel {
  #libc: Libc;
  #fd: number | undefined;

  private constructor(libc: Libc, fd: number) {
    this.#libc = libc;
    this.#fd = fd;
  }

  static open(libc: Libc, path: string): OutOfTreeChannel {
    const fd = tryOpen(libc, path);
    if (fd === undefined) {
      throw new ServiceError(
        "UNAVAILABLE",
        `${path} is absent: load bdevfilter (the out-of-tree blksnap needs it for every device)`,
        { errno: "ENOENT" },
      );
    }
    return new OutOfTreeChannel(libc, fd);
  }

  #send(request: number, arg: Uint8Array): FilterResult {
    if (this.#fd === undefined) {
      throw new ServiceError("UNAVAILABLE", "The bdevfilter channel is closed");
    }
    return { ...this.#libc.ioctl(this.#fd, request, arg), request };
  }

  #name(path: string, request: number): FilterResult {
    const pathBytes = cStringBytes(path);
    const arg = BdevfilterName.encode({
      devpath: this.#libc.pointerOf(pathBytes),
      name: BLKSNAP_FILTER_NAME,
    });
    const result = this.#send(request, arg);
    retain(pathBytes);
    return result;
  }

  attach(path: string): FilterResult {
    return this.#name(path, BDEVFILTER_ATTACH);
  }

  detach(path: string): FilterResult {
    return this.#name(path, BDEVFILTER_DETACH);
  }

  ctl(path: string, cmd: number, opt: Uint8Array): FilterResult {
    const pathBytes = cStringBytes(path);
    const arg = BdevfilterCtl.encode({
      devpath: this.#libc.pointerOf(pathBytes),
      name: BLKSNAP_FILTER_NAME,
      cmd,
      optlen: opt.length,
      opt: this.#libc.pointerOf(opt),
    });
    const result = this.#send(BDEVFILTER_CTL, arg);
    retain(pathBytes, opt);
    return result;
  }

  close(): void {
    if (this.#fd !== undefined) this.#libc.close(this.#fd);
    this.#fd = undefined;
  }
}

/**
 * Marks buffers whose addresses went to the kernel as used after the call,
 * so that they stay reachable (and alive) until the call has returned.
 */
function retain(..._buffers: Uint8Array[]): void {}
