/**
 * Engine parameters with the kernel module's defaults, and the sizing rules
 * for tracking blocks and chunks.
 *
 * Design note (seed 002_b854c5b944f19d94.txt, main.c: the parameter set and
 * defaults; seed 004 cbt_map.c cbt_map_calculate_block_size(); seed 003
 * diff_area.c diff_area_calculate_chunk_size() and diff_area_new()):
 * - tracking blocks start at the minimum shift and grow while the count is
 *   above the maximum count; at the maximum shift they stop growing and the
 *   count may then exceed the maximum;
 * - chunks start at the minimum shift and grow while the count is above the
 *   maximum count OR the chunk is smaller than the device's minimum I/O size;
 *   a result beyond the maximum shift is an error (diff_area_new: -EFAULT).
 * Counts are computed in bytes here: ceil(capacity / size), which equals the
 * kernel's sector arithmetic for sector-aligned capacities.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";

/** Tunables of the engine; names and defaults follow the kernel module's parameters. */
export interface EngineParams {
  /** Power of 2 of the smallest tracking (CBT) block, in bytes. Default 16 (64 KiB). */
  trackingBlockMinimumShift: number;
  /** Power of 2 of the largest tracking block. Default 26 (64 MiB). */
  trackingBlockMaximumShift: number;
  /** Tracking blocks wanted at most (exceeded only at the maximum shift). Default 2,097,152. */
  trackingBlockMaximumCount: number;
  /** Power of 2 of the smallest chunk (copy-on-write unit), in bytes. Default 18 (256 KiB). */
  chunkMinimumShift: number;
  /** Power of 2 of the largest chunk; a device needing more cannot be snapshotted. Default 26. */
  chunkMaximumShift: number;
  /** Chunks per device wanted at most. Default 2,097,152. */
  chunkMaximumCount: number;
  /** Chunks held in memory in the store queue before the store worker drains it. Default 16. */
  chunkMaximumInQueue: number;
  /** Free chunk buffers kept for reuse per device. Default 128. */
  freeDiffBufferPoolSize: number;
  /** Growth step of the difference storage, in 512-byte sectors. Default 2,097,152 (1 GiB). */
  diffStorageMinimumSectors: number;
}

/** The kernel module's defaults (seed 002, main.c). */
export const DEFAULT_ENGINE_PARAMS: Readonly<EngineParams> = Object.freeze({
  trackingBlockMinimumShift: 16,
  trackingBlockMaximumShift: 26,
  trackingBlockMaximumCount: 2_097_152,
  chunkMinimumShift: 18,
  chunkMaximumShift: 26,
  chunkMaximumCount: 2_097_152,
  chunkMaximumInQueue: 16,
  freeDiffBufferPoolSize: 128,
  diffStorageMinimumSectors: 2_097_152,
});

/** Bytes in a sector, the unit of the kernel interface. */
export const SECTOR_BYTES = 512;

const SECTOR_SHIFT = 9;
const MAX_TRACKING_SHIFT = 40;
const MAX_CHUNK_SHIFT = 30;

interface Bounds {
  min: number;
  max: number;
}

const bounds: Record<keyof EngineParams, Bounds> = {
  trackingBlockMinimumShift: { min: SECTOR_SHIFT, max: MAX_TRACKING_SHIFT },
  trackingBlockMaximumShift: { min: SECTOR_SHIFT, max: MAX_TRACKING_SHIFT },
  trackingBlockMaximumCount: { min: 1, max: 2 ** 32 },
  chunkMinimumShift: { min: SECTOR_SHIFT, max: MAX_CHUNK_SHIFT },
  chunkMaximumShift: { min: SECTOR_SHIFT, max: MAX_CHUNK_SHIFT },
  chunkMaximumCount: { min: 1, max: 2 ** 32 },
  chunkMaximumInQueue: { min: 0, max: 2 ** 20 },
  freeDiffBufferPoolSize: { min: 0, max: 2 ** 20 },
  diffStorageMinimumSectors: { min: 1, max: 2 ** 40 },
};

/**
 * The defaults with `overrides` applied, validated. Throws INVALID_ARGUMENT
 * for an unknown name, a value that is not an integer in its range, or a
 * minimum shift above its maximum shift.
 */
export function resolveEngineParams(overrides: Partial<EngineParams> = {}): EngineParams {
  const params: EngineParams = { ...DEFAULT_ENGINE_PARAMS };
  for (const [name, value] of Object.entries(overrides)) {
    if (!(name in bounds)) {
      throw new ServiceError("INVALID_ARGUMENT", `Unknown engine parameter "${name}"`, {
        field: name,
      });
    }
    if (value === undefined) continue;
    const key = name as keyof EngineParams;
    const { min, max } = bounds[key];
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Engine parameter ${name} must be an integer from ${min} to ${max}, not ${value}`,
        { field: name },
      );
    }
    params[key] = value;
  }
  if (params.trackingBlockMinimumShift > params.trackingBlockMaximumShift) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      "Engine parameter trackingBlockMinimumShift must not exceed trackingBlockMaximumShift",
      { field: "trackingBlockMinimumShift" },
    );
  }
  if (params.chunkMinimumShift > params.chunkMaximumShift) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      "Engine parameter chunkMinimumShift must not exceed chunkMaximumShift",
      { field: "chunkMinimumShift" },
    );
  }
  return params;
}

/** A power-of-two unit size and how many of them cover a capacity. */
export interface Sizing {
  /** Power of 2 of the unit size in bytes. */
  shift: number;
  /** Units needed to cover the capacity (the last one may be short). */
  count: number;
}

function countByShift(capacityBytes: number, shift: number): number {
  return Math.ceil(capacityBytes / 2 ** shift);
}

function checkCapacity(capacityBytes: number): void {
  if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot size a device of ${capacityBytes} bytes: the capacity must be a non-negative integer`,
    );
  }
}

/**
 * Tracking block size for a device of `capacityBytes` (seed 004,
 * cbt_map_calculate_block_size): from the minimum shift, grow while the count
 * is above the maximum count, stopping at the maximum shift.
 */
export function trackingBlockSizing(capacityBytes: number, params: EngineParams): Sizing {
  checkCapacity(capacityBytes);
  let shift = params.trackingBlockMinimumShift;
  let count = countByShift(capacityBytes, shift);
  while (count > params.trackingBlockMaximumCount) {
    if (shift >= params.trackingBlockMaximumShift) break;
    shift += 1;
    count = countByShift(capacityBytes, shift);
  }
  return { shift, count };
}

/**
 * Chunk size for a device of `capacityBytes` whose minimum I/O size is
 * `minIoBytes` (seed 003, diff_area_calculate_chunk_size and diff_area_new):
 * from the minimum shift, grow while the count is above the maximum count or
 * the chunk is smaller than `minIoBytes`. Throws INVALID_ARGUMENT when the
 * result exceeds the maximum chunk shift.
 */
export function chunkSizing(
  capacityBytes: number,
  minIoBytes: number,
  params: EngineParams,
): Sizing {
  checkCapacity(capacityBytes);
  if (!Number.isSafeInteger(minIoBytes) || minIoBytes < 0) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot size chunks for a minimum I/O size of ${minIoBytes} bytes`,
    );
  }
  let shift = params.chunkMinimumShift;
  let count = countByShift(capacityBytes, shift);
  while (count > params.chunkMaximumCount || 2 ** shift < minIoBytes) {
    shift += 1;
    count = countByShift(capacityBytes, shift);
  }
  if (shift > params.chunkMaximumShift) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot snapshot a device of ${capacityBytes} bytes (minimum I/O ${minIoBytes} bytes): ` +
        `it needs chunks of 2^${shift} bytes, above the maximum chunk shift ${params.chunkMaximumShift}`,
    );
  }
  return { shift, count };
}
