/**
 * Change tokens: the one place that says what a snapshot's CBT position is,
 * how it is written as an opaque string, and when "the changes since token
 * T" can be answered completely. Both backends make tokens with these rules
 * and the API checks them with the same rules, so an incremental backup gets
 * either every changed block or an explicit FULL_BACKUP_REQUIRED.
 *
 * Design note (seed 004 cbt_map.c, cbt_map_switch):
 * - A token names a device, its CBT generation and the change number of one
 *   snapshot: the CBT's changesNumber right after that snapshot's take.
 * - Writes between take N-1 and take N are marked with N's change number,
 *   so the blocks changed since the snapshot of change number `s` are those
 *   whose read-table byte is above `s`.
 * - Change numbers within a generation run 1, 2, ..., 254. The take that
 *   goes past 255 starts a new generation (cleared write table, the read
 *   table left stale) and reports 255: that snapshot comes first in its
 *   generation, so its rank is 0, and the snapshots after it run 1, 2, ...
 *   again. Nothing can be answered relative to an earlier snapshot at such a
 *   snapshot (its read table is stale), and nothing is lost after it.
 * - Format, version 1: base64url (no padding) of the bytes
 *   `[1][change number][16-byte generation UUID][device id, UTF-8]`.
 *   Decoding refuses anything else, also non-canonical encodings.
 *
 * @module
 */

import { DEVICE_ID_PATTERN } from "./driver.ts";
import { ServiceError } from "./errors.ts";

/** The format version this service writes and reads. */
export const CHANGE_TOKEN_VERSION = 1;

/** The change number a take reports when it starts a new generation (the 255 wrap). */
export const WRAP_CHANGE_NUMBER = 255;

/** A device's CBT position at one snapshot: what a change token names. */
export interface ChangePoint {
  /** The device's id. */
  deviceId: string;
  /** The CBT generation (UUID). */
  generationId: string;
  /** The changesNumber right after the snapshot's take (0 only for "since the generation began"). */
  changeNumber: number;
}

/** A device's CBT state as CBTINFO reports it (the fields tokens care about). */
export interface CbtPosition {
  /** The CBT generation (UUID). */
  generationId: string;
  /** The change number of the latest take. */
  changesNumber: number;
}

/** Why the changes since a token cannot be answered: take a full backup. */
export type FullBackupReason =
  | "generation_changed"
  | "other_device"
  | "not_earlier"
  | "malformed"
  | "cbt_corrupted";

/** Every {@link FullBackupReason}, in documentation order. */
export const FULL_BACKUP_REASONS: readonly FullBackupReason[] = [
  "generation_changed",
  "other_device",
  "not_earlier",
  "malformed",
  "cbt_corrupted",
];

/** The FULL_BACKUP_REQUIRED error for `reason`; `detail` says what could not be answered and why. */
export function fullBackupRequired(reason: FullBackupReason, detail: string): ServiceError {
  return new ServiceError("FULL_BACKUP_REQUIRED", detail, { reason, field: "since" });
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{26,112}$/;
const HEADER_BYTES = 18;

function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replaceAll("-", "");
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

function uuidString(bytes: Uint8Array): string {
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/**
 * The token of `point`. INVALID_ARGUMENT when the point is not one a
 * snapshot can have (bad device id, generation or change number).
 */
export function encodeChangeToken(point: ChangePoint): string {
  const { deviceId, generationId, changeNumber } = point;
  if (
    !DEVICE_ID_PATTERN.test(deviceId) || !UUID_PATTERN.test(generationId) ||
    !Number.isInteger(changeNumber) || changeNumber < 1 || changeNumber > 255
  ) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot make a change token of ${JSON.stringify(point)}: not a snapshot's CBT position`,
    );
  }
  const id = new TextEncoder().encode(deviceId);
  const bytes = new Uint8Array(HEADER_BYTES + id.length);
  bytes[0] = CHANGE_TOKEN_VERSION;
  bytes[1] = changeNumber;
  bytes.set(uuidBytes(generationId), 2);
  bytes.set(id, HEADER_BYTES);
  return base64url(bytes);
}

/** The point `token` names. FULL_BACKUP_REQUIRED (`malformed`) for anything but a valid token. */
export function decodeChangeToken(token: string): ChangePoint {
  const malformed = (why: string) =>
    fullBackupRequired("malformed", `The change token ${JSON.stringify(token)} is ${why}`);
  if (typeof token !== "string" || !TOKEN_PATTERN.test(token)) {
    throw malformed("not a change token (base64url of 19 to 82 bytes)");
  }
  let binary: string;
  try {
    binary = atob(token.replaceAll("-", "+").replaceAll("_", "/"));
  } catch {
    throw malformed("not valid base64url");
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (base64url(bytes) !== token) throw malformed("not canonical base64url");
  if (bytes[0] !== CHANGE_TOKEN_VERSION) throw malformed(`of unknown version ${bytes[0]}`);
  const deviceId = String.fromCharCode(...bytes.subarray(HEADER_BYTES));
  if (bytes.length <= HEADER_BYTES || !DEVICE_ID_PATTERN.test(deviceId)) {
    throw malformed("not naming a valid device id");
  }
  if (bytes[1] === 0) throw malformed("naming change number 0, which no snapshot has");
  return {
    deviceId,
    generationId: uuidString(bytes.subarray(2, HEADER_BYTES)),
    changeNumber: bytes[1],
  };
}

/** The order of change number `n` within its generation: the wrap take (255) comes first. */
export function changeRank(n: number): number {
  return n === WRAP_CHANGE_NUMBER ? 0 : n;
}

/** The CBT position right after a take, as a {@link ChangePoint} of `deviceId`. */
export function pointOf(deviceId: string, position: CbtPosition): ChangePoint {
  return { deviceId, generationId: position.generationId, changeNumber: position.changesNumber };
}

/**
 * The point of the device's previous snapshot in the same generation, or
 * undefined when there is none (first take of a generation, the 255 wrap,
 * a reset). `before` is the CBT position just before the take; without it
 * (a snapshot adopted later) a change number of 1 counts as having none,
 * since only `before` tells a fresh generation from one begun by a wrap.
 */
export function previousPoint(after: ChangePoint, before?: CbtPosition): ChangePoint | undefined {
  const { changeNumber } = after;
  if (changeNumber === WRAP_CHANGE_NUMBER || changeNumber < 1) return undefined;
  if (before) {
    if (before.generationId !== after.generationId || before.changesNumber < 1) return undefined;
    return { ...after, changeNumber: before.changesNumber };
  }
  return changeNumber >= 2 ? { ...after, changeNumber: changeNumber - 1 } : undefined;
}

/**
 * FULL_BACKUP_REQUIRED (`generation_changed`) unless the device's current
 * CBT is still the one `image` was taken with (a module reload, a resize or
 * a restart that lost the CBT give a new generation or number).
 */
export function checkCbtBelongs(image: ChangePoint, current: CbtPosition): void {
  if (current.generationId !== image.generationId || current.changesNumber !== image.changeNumber) {
    throw fullBackupRequired(
      "generation_changed",
      `The CBT of device ${image.deviceId} is no longer the one of this snapshot ` +
        `(generation ${current.generationId}, change number ${current.changesNumber}; the ` +
        `snapshot has generation ${image.generationId}, change number ${image.changeNumber})`,
    );
  }
}

/**
 * Checks that the changes of the snapshot at `image` can be answered
 * relative to `since`: same device, same generation, an earlier snapshot.
 * FULL_BACKUP_REQUIRED with `other_device`, `generation_changed` or
 * `not_earlier` otherwise.
 */
export function checkSince(image: ChangePoint, since: ChangePoint): void {
  if (since.deviceId !== image.deviceId) {
    throw fullBackupRequired(
      "other_device",
      `The change token is of device ${since.deviceId}, not ${image.deviceId}`,
    );
  }
  if (since.generationId !== image.generationId) {
    throw fullBackupRequired(
      "generation_changed",
      `The change token is of CBT generation ${since.generationId}; device ${image.deviceId} ` +
        `has generation ${image.generationId} at this snapshot (the CBT was reset or restarted)`,
    );
  }
  if (changeRank(since.changeNumber) >= changeRank(image.changeNumber)) {
    throw fullBackupRequired(
      "not_earlier",
      `The change token (change number ${since.changeNumber}) is not of a snapshot earlier ` +
        `than this one (change number ${image.changeNumber})`,
    );
  }
}

/** Options of {@link resolveSince}. */
export interface SinceOptions {
  /** A change token, or a bare change number (0 to 255) with `generation`. */
  since?: string;
  /** The generation a bare change number belongs to. */
  generation?: string;
  /** The previous snapshot of the device in this generation, for the default. */
  previous?: ChangePoint;
}

/**
 * The point the changes of the snapshot at `image` are answered relative
 * to: the token in `since`, a bare number with its `generation`, or by
 * default the previous snapshot. FULL_BACKUP_REQUIRED with the reason when
 * that cannot be answered completely; INVALID_ARGUMENT for a `generation`
 * without a bare number.
 */
export function resolveSince(image: ChangePoint, options: SinceOptions): ChangePoint {
  const { since, generation, previous } = options;
  if (generation !== undefined && (since === undefined || !/^\d{1,3}$/.test(since))) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      "generation goes only with a bare change number in since",
      { field: "generation" },
    );
  }
  let base: ChangePoint;
  if (since === undefined) {
    if (!previous) {
      throw fullBackupRequired(
        "generation_changed",
        `Device ${image.deviceId} has no earlier snapshot in CBT generation ${image.generationId} ` +
          `to be relative to (first snapshot since attach, a reset or the 255 wrap)`,
      );
    }
    base = previous;
  } else if (/^\d{1,3}$/.test(since)) {
    const changeNumber = Number(since);
    if (generation === undefined || changeNumber > 255) {
      throw fullBackupRequired(
        "malformed",
        `A bare change number in since (${since}) needs generation=<uuid> of the CBT it belongs to`,
      );
    }
    base = { deviceId: image.deviceId, generationId: generation.toLowerCase(), changeNumber };
  } else {
    base = decodeChangeToken(since);
  }
  checkSince(image, base);
  return base;
}

/** True when `error` is the CBT's "map corrupted" failure (EFAULT from CBTMAP or the engine). */
export function isCbtCorruption(error: unknown): boolean {
  return error instanceof ServiceError && error.code === "IO" && error.errno === "EFAULT";
}
