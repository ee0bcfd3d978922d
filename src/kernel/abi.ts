/**
 * The blksnap kernel interface of ../shared/docs/ABI.md, declared once: every
 * argument struct as a C-aligned little-endian layout, and every request
 * number computed from those layouts with `_IOR/_IOW/_IOWR`. Field names keep
 * the kernel's spelling so that a reader can look them up.
 *
 * Pointer fields (`diff_storage_filename`, `ids`, `buffer`, `dirty_sectors`,
 * `devpath`, `opt`) are user-space addresses as plain numbers (x86_64 user
 * addresses stay below 2^47, well inside the safe integer range).
 *
 * @module
 */

import { bytes, cString, i32le, i64le, struct, u16le, u32le, u64le, u8 } from "../layout/mod.ts";
import { _IOR, _IOW, _IOWR } from "./ioctl.ts";

/** Type byte of the control device's requests ('V'). */
export const BLKSNAP_IOCTL_TYPE = 0x56;
/** Type byte of the upstream block-device filter requests (the block layer's 0x12). */
export const BLKFILTER_IOCTL_TYPE = 0x12;
/** Type byte of the out-of-tree bdevfilter requests ('F'). */
export const BDEVFILTER_IOCTL_TYPE = 0x46;

/** Length of a filter name field, NUL-padded. */
export const BLKFILTER_NAME_LENGTH = 32;
/** Length of the image disk name in SNAPSHOTINFO. */
export const IMAGE_DISK_NAME_LEN = 32;
/** The filter name of blksnap in both profiles. */
export const BLKSNAP_FILTER_NAME = "blksnap";
/** Bytes of the event payload. */
export const BLKSNAP_EVENT_DATA_SIZE = 4096 - 32;
/** Bytes per sector in every `_sect` field. */
export const SECTOR_SIZE = 512;

/** `struct blksnap_uuid` (16 bytes). */
export const BlksnapUuid = struct({ b: bytes(16) });

/** `struct blksnap_version` (8 bytes): the module's version. */
export const BlksnapVersion = struct({
  major: u16le,
  minor: u16le,
  revision: u16le,
  build: u16le,
});

/** `struct blksnap_snapshot_create` (32 bytes): limit in sectors, storage path address, out id. */
export const BlksnapSnapshotCreate = struct({
  diff_storage_limit_sect: u64le,
  diff_storage_filename: u64le,
  id: BlksnapUuid,
});

/** `struct blksnap_snapshot_collect` (16 bytes): in/out count, address of a uuid array. */
export const BlksnapSnapshotCollect = struct({ count: u32le, ids: u64le });

/** `struct blksnap_snapshot_event` (4096 bytes): in id and timeout, out code, time and data. */
export const BlksnapSnapshotEvent = struct({
  id: BlksnapUuid,
  timeout_ms: u32le,
  code: u32le,
  time_label: i64le,
  data: bytes(BLKSNAP_EVENT_DATA_SIZE),
});

/** `struct blksnap_event_corrupted` (12 bytes): payload of the corrupted event. */
export const BlksnapEventCorrupted = struct({
  dev_id_mj: u32le,
  dev_id_mn: u32le,
  err_code: i32le,
});

/** `struct blksnap_event_no_space` (8 bytes): payload of the no_space event. */
export const BlksnapEventNoSpace = struct({ requested_nr_sect: u64le });

/** `struct blksnap_cbtinfo` (40 bytes): result of CBTINFO. */
export const BlksnapCbtinfo = struct({
  device_capacity: u64le,
  block_size: u32le,
  block_count: u32le,
  generation_id: BlksnapUuid,
  changes_number: u8,
});

/** `struct blksnap_cbtmap` (16 bytes): option of CBTMAP. */
export const BlksnapCbtmap = struct({ offset: u32le, length: u32le, buffer: u64le });

/** `struct blksnap_sectors` (16 bytes): a range in sectors. */
export const BlksnapSectors = struct({ offset: u64le, count: u64le });

/** `struct blksnap_cbtdirty` (16 bytes): option of CBTDIRTY. */
export const BlksnapCbtdirty = struct({ count: u32le, dirty_sectors: u64le });

/** `struct blksnap_snapshotadd` (16 bytes): option of SNAPSHOTADD. */
export const BlksnapSnapshotadd = struct({ id: BlksnapUuid });

/** `struct blksnap_snapshotinfo` (36 bytes): result of SNAPSHOTINFO. */
export const BlksnapSnapshotinfo = struct({
  error_code: i32le,
  image: cString(IMAGE_DISK_NAME_LEN),
});

/** `struct blkfilter_attach` (48 bytes, upstream). */
export const BlkfilterAttach = struct({
  name: cString(BLKFILTER_NAME_LENGTH),
  opt: u64le,
  optlen: u32le,
});

/** `struct blkfilter_detach` (32 bytes, upstream). */
export const BlkfilterDetach = struct({ name: cString(BLKFILTER_NAME_LENGTH) });

/** `struct blkfilter_ctl` (48 bytes, upstream). */
export const BlkfilterCtl = struct({
  name: cString(BLKFILTER_NAME_LENGTH),
  cmd: u32le,
  optlen: u32le,
  opt: u64le,
});

/**
 * `struct blkfilter_name` (32 bytes): ATTACH's and DETACH's argument in the older v6/v7
 * numbering (patch series v6/v7, lk6.7–lk6.9), which the driver only probes with.
 */
export const BlkfilterName = struct({ name: cString(BLKFILTER_NAME_LENGTH) });

/** `struct bdevfilter_name` (40 bytes, out-of-tree): device path address and filter name. */
export const BdevfilterName = struct({ devpath: u64le, name: cString(BLKFILTER_NAME_LENGTH) });

/** `struct bdevfilter_ctl` (56 bytes, out-of-tree). */
export const BdevfilterCtl = struct({
  devpath: u64le,
  name: cString(BLKFILTER_NAME_LENGTH),
  cmd: u32le,
  optlen: u32le,
  opt: u64le,
});

/** The `u64` that BLKGETSIZE64 writes: a block device's size in bytes. */
export const BlockDeviceSize = struct({ bytes: u64le });

/** Control device requests (both profiles). */
export const IOCTL_BLKSNAP_VERSION: number = _IOR(BLKSNAP_IOCTL_TYPE, 0, BlksnapVersion);
/** Creates a snapshot. */
export const IOCTL_BLKSNAP_SNAPSHOT_CREATE: number = _IOWR(
  BLKSNAP_IOCTL_TYPE,
  1,
  BlksnapSnapshotCreate,
);
/** Destroys a snapshot. */
export const IOCTL_BLKSNAP_SNAPSHOT_DESTROY: number = _IOW(BLKSNAP_IOCTL_TYPE, 2, BlksnapUuid);
/** Takes a snapshot. */
export const IOCTL_BLKSNAP_SNAPSHOT_TAKE: number = _IOW(BLKSNAP_IOCTL_TYPE, 3, BlksnapUuid);
/** Lists snapshot ids. */
export const IOCTL_BLKSNAP_SNAPSHOT_COLLECT: number = _IOR(
  BLKSNAP_IOCTL_TYPE,
  4,
  BlksnapSnapshotCollect,
);
/** Waits for a snapshot event (blocks up to `timeout_ms`). */
export const IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT: number = _IOR(
  BLKSNAP_IOCTL_TYPE,
  5,
  BlksnapSnapshotEvent,
);

/** Upstream: attaches a filter, on the block device's own fd. */
export const BLKFILTER_ATTACH: number = _IOWR(BLKFILTER_IOCTL_TYPE, 142, BlkfilterAttach);
/** Upstream: detaches a filter, on the block device's own fd. */
export const BLKFILTER_DETACH: number = _IOWR(BLKFILTER_IOCTL_TYPE, 143, BlkfilterDetach);
/** Upstream: sends a filter command, on the block device's own fd. */
export const BLKFILTER_CTL: number = _IOWR(BLKFILTER_IOCTL_TYPE, 144, BlkfilterCtl);

/**
 * The v6/v7 numbering (lk6.7–lk6.9) of the filter requests, 140–142: known only to detect a
 * kernel that speaks it (ABI.md). Its CTL number is lk6.15's ATTACH, so it is not declared.
 */
export const BLKFILTER_V7_ATTACH: number = _IOWR(BLKFILTER_IOCTL_TYPE, 140, BlkfilterName);
/** v6/v7 numbering: detaches a filter. */
export const BLKFILTER_V7_DETACH: number = _IOWR(BLKFILTER_IOCTL_TYPE, 141, BlkfilterName);

/** Out-of-tree: attaches a filter, on /dev/bdevfilter. */
export const BDEVFILTER_ATTACH: number = _IOWR(BDEVFILTER_IOCTL_TYPE, 140, BdevfilterName);
/** Out-of-tree: detaches a filter, on /dev/bdevfilter. */
export const BDEVFILTER_DETACH: number = _IOWR(BDEVFILTER_IOCTL_TYPE, 141, BdevfilterName);
/** Out-of-tree: sends a filter command, on /dev/bdevfilter. */
export const BDEVFILTER_CTL: number = _IOWR(BDEVFILTER_IOCTL_TYPE, 142, BdevfilterCtl);

/** `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)`: size of a block device in bytes. */
export const BLKGETSIZE64: number = _IOR(BLKFILTER_IOCTL_TYPE, 114, BlockDeviceSize);

/** Filter commands of blksnap (`enum blkfilter_ctl_blksnap`). */
export const BlkfilterCtlBlksnap = {
  BLKFILTER_CTL_BLKSNAP_CBTINFO: 0,
  BLKFILTER_CTL_BLKSNAP_CBTMAP: 1,
  BLKFILTER_CTL_BLKSNAP_CBTDIRTY: 2,
  BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD: 3,
  BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO: 4,
} as const;

/** A filter command number. */
export type FilterCommand = typeof BlkfilterCtlBlksnap[keyof typeof BlkfilterCtlBlksnap];

/** Event codes of SNAPSHOT_WAIT_EVENT. */
export const BlksnapEventCode = { corrupted: 0, no_space: 1 } as const;

const requestNames = new Map<number, string>([
  [IOCTL_BLKSNAP_VERSION, "VERSION"],
  [IOCTL_BLKSNAP_SNAPSHOT_CREATE, "SNAPSHOT_CREATE"],
  [IOCTL_BLKSNAP_SNAPSHOT_DESTROY, "SNAPSHOT_DESTROY"],
  [IOCTL_BLKSNAP_SNAPSHOT_TAKE, "SNAPSHOT_TAKE"],
  [IOCTL_BLKSNAP_SNAPSHOT_COLLECT, "SNAPSHOT_COLLECT"],
  [IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, "SNAPSHOT_WAIT_EVENT"],
  [BLKFILTER_ATTACH, "BLKFILTER_ATTACH"],
  [BLKFILTER_DETACH, "BLKFILTER_DETACH"],
  [BLKFILTER_CTL, "BLKFILTER_CTL"],
  [BLKFILTER_V7_ATTACH, "BLKFILTER_ATTACH (v6/v7)"],
  [BLKFILTER_V7_DETACH, "BLKFILTER_DETACH (v6/v7)"],
  [BDEVFILTER_ATTACH, "BDEVFILTER_ATTACH"],
  [BDEVFILTER_DETACH, "BDEVFILTER_DETACH"],
  [BDEVFILTER_CTL, "BDEVFILTER_CTL"],
  [BLKGETSIZE64, "BLKGETSIZE64"],
]);

/** The name of a request number ("SNAPSHOT_CREATE"), or undefined. */
export function requestName(request: number): string | undefined {
  return requestNames.get(request);
}

const commandNames = new Map<number, string>(
  Object.entries(BlkfilterCtlBlksnap).map(([name, cmd]) => [
    cmd,
    name.replace("BLKFILTER_CTL_BLKSNAP_", ""),
  ]),
);

/** The short name of a filter command ("CBTMAP"), or undefined. */
export function filterCommandName(cmd: number): string | undefined {
  return commandNames.get(cmd);
}

const hex = (byte: number) => byte.toString(16).padStart(2, "0");

/** Formats 16 uuid bytes as the canonical lower-case `8-4-4-4-12` string. */
export function formatUuid(b: Uint8Array): string {
  const h = Array.from(b.subarray(0, 16), hex).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Parses a canonical uuid string into 16 bytes; undefined when it is not one. */
export function parseUuid(text: string): Uint8Array | undefined {
  if (!UUID_PATTERN.test(text)) return undefined;
  const h = text.replaceAll("-", "");
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(h.slice(i * 2, i * 2 + 2), 16));
}
