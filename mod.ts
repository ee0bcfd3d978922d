/**
 * blksnap service: block-device snapshots with change block tracking behind
 * one HTTP API, on the blksnap kernel module or a userspace engine served
 * over NBD. This module is the library surface; importing it has no side
 * effects and needs no permissions.
 *
 * @example
 * ```ts
 * import { ServiceError, errorTable } from "./mod.ts";
 * const error = new ServiceError("NOT_FOUND", "Cannot read device vdb: it is not attached");
 * errorTable[error.code].status; // 404
 * ```
 *
 * @module
 */

export * from "./src/errors.ts";
export type * from "./src/driver.ts";
