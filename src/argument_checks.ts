/**
 * Argument checks shared by both drivers, made before the engine or the
 * module sees a request so that both backends raise the same codes for the
 * same mistakes
 * (the conformance suite, tests/conformance, holds them to it):
 * INVALID_ARGUMENT for malformed input (a relative path, a negative offset,
 * a device listed twice), OUT_OF_RANGE only for well-formed values past the
 * end of something.
 *
 * @module
 */

import { isAbsolute } from "node:path";
import type { SectorRange } from "./driver.ts";
import { ServiceError } from "./errors.ts";

/** An INVALID_ARGUMENT error about `field`. */
export function invalid(detail: string, field?: string): ServiceError {
  return new ServiceError("INVALID_ARGUMENT", detail, { field });
}

/** True for a safe integer >= 0. */
export function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** INVALID_ARGUMENT unless `path` is an absolute path. */
export function checkAbsolute(path: unknown, what: string, field: string): void {
  if (typeof path !== "string" || !isAbsolute(path)) {
    throw invalid(`${what}: the path must be absolute, not "${path}"`, field);
  }
}

/** INVALID_ARGUMENT unless `ids` is an array of distinct names. */
export function checkDeviceIds(ids: unknown, what: string): asserts ids is string[] {
  if (!Array.isArray(ids)) throw invalid(`${what}: deviceIds must be an array`, "deviceIds");
  if (new Set(ids).size !== ids.length) {
    throw invalid(`${what}: a device is listed twice`, "deviceIds");
  }
}

/**
 * Checks dirty ranges against a device of `capacitySectors`: INVALID_ARGUMENT
 * for a non-array or a malformed range, OUT_OF_RANGE for one past the end
 * (the CBT map covers whole tracking blocks, but sectors past the device's
 * end are still out of range).
 */
export function checkDirtyRanges(ranges: unknown, capacitySectors: number, what: string): void {
  if (!Array.isArray(ranges)) throw invalid(`${what}: ranges must be an array`, "ranges");
  ranges.forEach((range: SectorRange | undefined, i) => {
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
