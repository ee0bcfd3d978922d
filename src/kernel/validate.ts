/**
 * Argument checks of the kernel driver, made before any request reaches the
 * module so that the module's EINVAL keeps one meaning (see errno.ts). What
 * the driver opens is checked in open_checked.ts.
 *
 * @module
 */

import { checkAbsolute, checkDeviceIds, invalid } from "../argument_checks.ts";
import type { CreateSnapshotOptions } from "../driver.ts";
import { SECTOR_SIZE } from "./abi.ts";

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

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
  checkDeviceIds(deviceIds, what);
  const path = options.diffStorage?.path;
  checkAbsolute(path, `${what}: difference storage`, "diffStorage.path");
  const limitBytes = options.diffStorage.limitBytes;
  if (!Number.isSafeInteger(limitBytes) || limitBytes < SECTOR_SIZE) {
    throw invalid(`${what}: limitBytes must be an integer >= 512`, "diffStorage.limitBytes");
  }
  return { deviceIds, path, limitBytes, limitSectors: Math.floor(limitBytes / SECTOR_SIZE) };
}
