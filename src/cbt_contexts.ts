/**
 * The CBT as NBD metadata contexts, so incremental-backup clients can ask
 * "what changed" over NBD:
 *
 * - `qemu:dirty-bitmap:cbt`: the dirty-bitmap context QEMU's clients read
 *   (`qemu-img map --image-opts ...,x-dirty-bitmap=qemu:dirty-bitmap:cbt`,
 *   `nbdinfo --map=qemu:dirty-bitmap:cbt`). Flag 1 (dirty) marks the blocks
 *   changed since the previous snapshot: read-table numbers at or above the
 *   changes number (any non-zero number before the first take).
 * - `blksnap:change-number`: our own context; each extent's flags carry the
 *   change number (0..255) of its blocks in the read table, the byte the
 *   kernel's CBTMAP returns, so a client can compute changes since any
 *   earlier snapshot of the same generation.
 * - `blksnap:change-token:<token>` and `blksnap:previous-change-token:<token>`:
 *   names only (their extents are all 0) that let a client check, with
 *   NBD_OPT_LIST_META_CONTEXT, which CBT state the two contexts above
 *   describe before trusting them: an image lists its own change token and
 *   the token its dirty bitmap is relative to (the previous snapshot's, when
 *   there is one in the same generation); a tracked device lists the token
 *   of its latest take. An image whose device's CBT is no longer the one it
 *   was taken with (or is corrupted) lists neither: take a full backup.
 *
 * Extents follow the CBT's block size; the last one is clipped to the size.
 * Both backends serve these contexts: the userspace engine's CbtMap and the
 * kernel module's CBTMAP (read into a {@link CbtView}) give the same view.
 *
 * @module
 */

import type { NbdExtent } from "./nbd/export.ts";

/** What the contexts need of a CBT: its geometry, the previous change number, the read table. */
export interface CbtView {
  /** Tracking block size in bytes. */
  readonly blockSizeBytes: number;
  /** Number of tracking blocks. */
  readonly blockCount: number;
  /** The change number of the last take (CbtInfo.changesNumber). */
  readonly previousNumber: number;
  /** `lengthBlocks` entries of the read table from block `offsetBlocks`. */
  read(offsetBlocks: number, lengthBlocks: number): Uint8Array;
}

/** Name of the dirty-bitmap context. */
export const DIRTY_BITMAP_CONTEXT = "qemu:dirty-bitmap:cbt";
/** Name of the change-number context. */
export const CHANGE_NUMBER_CONTEXT = "blksnap:change-number";
/** The CBT contexts an export offers. */
export const CBT_CONTEXTS: readonly string[] = [DIRTY_BITMAP_CONTEXT, CHANGE_NUMBER_CONTEXT];
/** Prefix of the context naming the export's change token. */
export const CHANGE_TOKEN_CONTEXT = "blksnap:change-token:";
/** Prefix of the context naming the token `qemu:dirty-bitmap:cbt` is relative to. */
export const PREVIOUS_TOKEN_CONTEXT = "blksnap:previous-change-token:";

/** The CBT contexts of an export whose CBT state has these tokens. */
export function cbtContextNames(
  tokens: { changeToken?: string; previousChangeToken?: string },
): string[] {
  return [
    ...CBT_CONTEXTS,
    ...(tokens.changeToken ? [CHANGE_TOKEN_CONTEXT + tokens.changeToken] : []),
    ...(tokens.previousChangeToken ? [PREVIOUS_TOKEN_CONTEXT + tokens.previousChangeToken] : []),
  ];
}

function isTokenContext(context: string): boolean {
  return context.startsWith(CHANGE_TOKEN_CONTEXT) || context.startsWith(PREVIOUS_TOKEN_CONTEXT);
}

const MAX_EXTENTS = 1 << 16;

/** The change numbers above which a block counts as dirty: changed since the previous snapshot. */
export function dirtyThreshold(cbt: CbtView): number {
  return Math.max(0, cbt.previousNumber - 1);
}

/**
 * Extents of `context` over `sizeBytes` bytes of the device tracked by `cbt`,
 * from `offset` for up to `length` bytes (runs of equal flags merged).
 */
export function cbtExtents(
  cbt: CbtView,
  context: string,
  range: { offset: number; length: number; sizeBytes: number },
): NbdExtent[] {
  const blockSize = cbt.blockSizeBytes;
  const end = Math.min(range.offset + range.length, range.sizeBytes);
  if (isTokenContext(context)) return [{ length: Math.max(1, end - range.offset), flags: 0 }];
  const firstBlock = Math.floor(range.offset / blockSize);
  const lastBlock = Math.min(Math.ceil(end / blockSize), cbt.blockCount);
  const map = cbt.read(firstBlock, Math.max(0, lastBlock - firstBlock));
  const threshold = dirtyThreshold(cbt);
  const flagOf = context === DIRTY_BITMAP_CONTEXT
    ? (value: number) => value > threshold ? 1 : 0
    : (value: number) => value;
  const extents: NbdExtent[] = [];
  let position = range.offset;
  let index = 0;
  while (position < end && extents.length < MAX_EXTENTS) {
    const flags = index < map.length ? flagOf(map[index]) : 0;
    let next = index + 1;
    while (next < map.length && flagOf(map[next]) === flags) next++;
    const stop = Math.min((firstBlock + next) * blockSize, range.sizeBytes);
    extents.push({ length: stop - position, flags });
    position = stop;
    index = next;
  }
  if (extents.length === 0) extents.push({ length: Math.max(1, end - range.offset), flags: 0 });
  return extents;
}
