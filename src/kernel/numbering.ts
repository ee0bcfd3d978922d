/**
 * Which numbering of the block-device filter requests an upstream kernel speaks (ABI.md). VERSION
 * answers 2.0.0.0 in every series, so only the filter requests tell: the lk6.15 series numbers
 * them 142–144, the older v6/v7 series (lk6.7–lk6.9) 140–142, and lk6.15's ATTACH number is the
 * v7 CTL number, so sending lk6.15's ATTACH to a v7 kernel reaches CTL and fails with a
 * misleading ENOENT. The driver speaks lk6.15 only; this module finds out, without changing
 * anything, whether the kernel does too.
 *
 * The probe sends two requests to one block device, each with a filter name no filter has (the
 * empty one):
 *
 * - lk6.15's CTL (0xC0301290). An lk6.15 kernel looks at the device's filter and answers ENOENT
 *   (none) or EINVAL (one with another name); it never reaches a filter's ctl. A kernel that
 *   does not know the number hands it to the disk driver, which answers ENOTTY (virtio-blk,
 *   nbd) or EINVAL (loop).
 * - v7's ATTACH (0xC020128C). A v6/v7 kernel looks the name up among the registered filters
 *   before it touches the device, and answers ENOENT; an lk6.15 kernel does not know the number
 *   (the disk driver answers, never with ENOENT).
 *
 * So ENOENT to v7's ATTACH means the v6/v7 numbering; ENOENT to lk6.15's CTL, or EINVAL to it
 * while v7's ATTACH gets ENOTTY, means lk6.15; ENOTTY to both means neither; anything else
 * (EINVAL to both: a loop device with a filter on it; EACCES without the capability) decides
 * nothing, and the driver goes on with lk6.15 (its requests then fail with their own errors).
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import { BLKFILTER_CTL, BLKFILTER_V7_ATTACH, BlkfilterCtl, BlkfilterName } from "./abi.ts";
import { KernelErrno } from "./errno.ts";
import { formatRequest } from "./ioctl.ts";
import { type Libc, OpenFlags } from "./libc.ts";

/** What the probe found. */
export type FilterNumbering = "lk6.15" | "v6/v7" | "none" | "unclear";

/** The errno of each probe request (0 when it succeeded). */
export interface NumberingAnswers {
  /** lk6.15's BLKFILTER_CTL with an unknown filter name. */
  lk615Ctl: number;
  /** v6/v7's BLKFILTER_ATTACH with an unknown filter name. */
  v7Attach: number;
}

const { EINVAL, ENOENT, ENOTTY } = KernelErrno;

/** Reads the numbering from the answers (see the module doc). */
export function readNumbering(answers: NumberingAnswers): FilterNumbering {
  if (answers.v7Attach === ENOENT) return "v6/v7";
  if (answers.lk615Ctl === ENOENT) return "lk6.15";
  if (answers.lk615Ctl === EINVAL && answers.v7Attach === ENOTTY) return "lk6.15";
  if (answers.lk615Ctl === ENOTTY && answers.v7Attach === ENOTTY) return "none";
  return "unclear";
}

/**
 * Sends both probes to the block device at `path` (opened read-only and closed again);
 * undefined when it cannot be opened.
 */
export function probeNumbering(libc: Libc, path: string): NumberingAnswers | undefined {
  const opened = libc.open(path, OpenFlags.O_RDONLY | OpenFlags.O_CLOEXEC);
  if (opened.result < 0) return undefined;
  try {
    const ctl = BlkfilterCtl.encode({ name: "", cmd: 0, optlen: 0, opt: 0 });
    const lk615 = libc.ioctl(opened.result, BLKFILTER_CTL, ctl);
    const attach = BlkfilterName.encode({ name: "" });
    const v7 = libc.ioctl(opened.result, BLKFILTER_V7_ATTACH, attach);
    return {
      lk615Ctl: lk615.result < 0 ? lk615.errno : 0,
      v7Attach: v7.result < 0 ? v7.errno : 0,
    };
  } finally {
    libc.close(opened.result);
  }
}

/** Names in the device directory never worth probing: floppies and CD drives may stall on open. */
const SKIPPED = /^(fd\d|sr\d|blksnap-)/;

/**
 * The first block device in `devDir` (sorted by name, at most `limit` entries looked at, 4096 by
 * default) that
 * {@link probeNumbering} can use, with its answers; undefined when there is none.
 */
export function probeSomeDevice(
  libc: Libc,
  devDir: string,
  options: { limit?: number } = {},
): { path: string; answers: NumberingAnswers } | undefined {
  const limit = options.limit ?? 4096;
  let names: string[];
  try {
    names = [...Deno.readDirSync(devDir)].filter((entry) => !entry.isDirectory)
      .map((entry) => entry.name).filter((name) => !SKIPPED.test(name)).sort().slice(0, limit);
  } catch {
    return undefined;
  }
  for (const name of names) {
    const path = `${devDir}/${name}`;
    if (libc.blockDeviceNumber(path) === undefined) continue;
    const answers = probeNumbering(libc, path);
    if (answers !== undefined) return { path, answers };
  }
  return undefined;
}

/**
 * The refusal for a kernel whose filter requests are not lk6.15's, or undefined when the
 * numbering does not forbid going on.
 */
export function numberingError(
  numbering: FilterNumbering,
  where: { controlPath: string; device: string },
): ServiceError | undefined {
  if (numbering === "v6/v7") {
    return new ServiceError(
      "MODULE_MISMATCH",
      `The blksnap module behind ${where.controlPath} comes with the v6/v7 numbering of the ` +
        `block-device filter requests (patch series v6/v7, veeam/blksnap lk6.7–lk6.9: ` +
        `BLKFILTER_ATTACH ${formatRequest(BLKFILTER_V7_ATTACH)} answered on ${where.device}); ` +
        `this service speaks the lk6.15 numbering (${formatRequest(BLKFILTER_CTL)} and its ` +
        `neighbours): use a kernel with veeam/blksnap's patches/lk6.15 series`,
      { errno: "ENOTTY" },
    );
  }
  if (numbering === "none") {
    return new ServiceError(
      "MODULE_MISMATCH",
      `The kernel has ${where.controlPath} but answers no block-device filter request on ` +
        `${where.device} (ENOTTY to both the lk6.15 and the v6/v7 numbering): it lacks the ` +
        `blk-filter patch that blksnap needs`,
      { errno: "ENOTTY" },
    );
  }
  return undefined;
}
