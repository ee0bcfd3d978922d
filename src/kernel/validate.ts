/**
 * Argument checks of the kernel driver, made before any request reaches the
 * module so that the module's EINVAL keeps one meaning (see errno.ts). What
 * the driver opens is checked in open_checked.ts.
 *
 * @module
 */

import type { CreateSnapshotOptions, SectorRange } from "../driver.ts";
import { ServiceError } from "../errors.ts";
import { SECTOR_SIZE } from "./abi.ts";

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

/** An INVALID_ARGUMENT error about `field`. */
export function invalid(detail: string, field?: string): ServiceError {
  return new ServiceError("INVALID_ARGUMENT", detail, { field });
}

/** True for a safe integer >= 0. */
export function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/**
 * The device id for attaching `path`: `name`, or the path's base name.
 * INVALID_ARGUMENT for a relative path or a name outside `[A-Za-z0-9._:-]`.
 */
export function deviceName(path: string, name?: string): string {
  const what = `Cannot attach ${path}`;
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw invalid(`${what}: the path must be absolute`, "path");
  }
  const id = name ?? path.replace(/\/+$/, "").split("/").pop() ?? "";
  if (!NAME_PATTERN.test(id)) {
    throw invalid(`${what}: "${id}" is not a valid device name (letters, digits, . _ : -)`, "name");
  }
  return id;
}

/**
 * Checks dirty ranges against a device of `capacitySectors`: INVALID_ARGUMENT
 * for a malformed range, OUT_OF_RANGE for one past the end.
 */
export function checkRanges(ranges: SectorRange[], capacitySectors: number, what: string): void {
  ranges.forEach((range, i) => {
    if (!isCount(range?.offsetSectors) || !isCount(range.countSectors) || !range.countSectors) {
      throw invalid(`${what}: range ${i} needs offsetSectors >= 0, countSectors >= 1`, "ranges");
    }
    if (range.offsetSectors + range.countSectors > capacitySectors) {
      throw new ServiceError(
        "OUT_OF_RANGE",
        `${what}: range ${i} passes the end of the device (${capacitySectors} sectors)`,
        { field: "ranges" },
      );
    }
  });
}

/** The checked parts of {@link CreateSnapshotOptions}. */
export interface CheckedCreate {
  /** Devices to add, each once. */
  deviceIds: string[];
  /** Absolute storage path. */
  path: string;
  /** Limit in bytes (at least one sector). */
  limitBytes: number;
  /** The limit in sectors, rounded down. */
  limitSectors: number;
}

/** Checks the shape of create options. INVALID_ARGUMENT naming the field at fault. */
export function checkCreateOptions(options: CreateSnapshotOptions, what: string): CheckedCreate {
  const deviceIds = options?.deviceIds;
  if (!Array.isArray(deviceIds)) throw invalid(`${what}: deviceIds must be an array`, "deviceIds");
  if (new Set(deviceIds).size !== deviceIds.length) {
    throw invalid(`${what}: a device is listed twice`, "deviceIds");
  }
  const path = options.diffStorage?.path;
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw invalid(`${what}: the difference storage path must be absolute`, "diffStorage.path");
  }
  const limitBytes = options.diffStorage.limitBytes;
  if (!Number.isSafeInteger(limitBytes) || limitBytes < SECTOR_SIZE) {
    throw invalid(`${what}: limitBytes must be an integer >= 512`, "diffStorage.limitBytes");
  }
  return { deviceIds, path, limitBytes, limitSectors: Math.floor(limitBytes / SECTOR_SIZE) };
}
