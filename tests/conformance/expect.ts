/**
 * Expectations shared by the conformance cases: the kernel's tracking-block
 * sizing (written out here from seed 004's cbt_map_calculate_block_size with
 * the module defaults of seed 002, independently of src/engine), error-code
 * assertions on ServiceError, and reproducible device content.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { ErrorCode } from "../../src/errors.ts";
import { isServiceError } from "../../src/errors.ts";
import { Prng } from "../_helpers/prng.ts";

/** Bytes in a sector. */
export const SECTOR = 512;

const MINIMUM_SHIFT = 16;
const MAXIMUM_SHIFT = 26;
const MAXIMUM_COUNT = 2_097_152;

/**
 * The tracking block size and count the kernel gives a device of
 * `capacityBytes`: start at 64 KiB and double while there are more than
 * 2,097,152 blocks, up to 64 MiB.
 */
export function expectedTracking(capacityBytes: number): { blockSize: number; blockCount: number } {
  let shift = MINIMUM_SHIFT;
  let count = Math.ceil(capacityBytes / 2 ** shift);
  while (count > MAXIMUM_COUNT && shift < MAXIMUM_SHIFT) {
    shift += 1;
    count = Math.ceil(capacityBytes / 2 ** shift);
  }
  return { blockSize: 2 ** shift, blockCount: count };
}

/** Asserts that `promise` rejects with a ServiceError of `code`; returns that error. */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: ErrorCode,
  what: string,
): Promise<Error> {
  let failure: unknown;
  try {
    await promise;
  } catch (error) {
    failure = error;
  }
  assert.ok(failure !== undefined, `${what}: resolved, expected ${code}`);
  assert.ok(isServiceError(failure), `${what}: rejected with ${failure}, not a ServiceError`);
  assert.equal(failure.code, code, `${what}: ${failure.message}`);
  return failure;
}

/** `length` reproducible pseudo-random bytes from `seed`. */
export function randomBytes(length: number, seed: number): Uint8Array {
  return new Prng(seed).bytes(length);
}

/** The indexes of the bytes of `map` that are non-zero and at least `atLeast`. */
export function blocksAtLeast(map: Uint8Array, atLeast: number): number[] {
  const blocks: number[] = [];
  map.forEach((value, index) => {
    if (value >= atLeast && value !== 0) blocks.push(index);
  });
  return blocks;
}

/** The tracking blocks a write of `length` bytes at `offset` touches. */
export function blocksOf(offset: number, length: number, blockSize: number): number[] {
  const first = Math.floor(offset / blockSize);
  const last = Math.floor((offset + length - 1) / blockSize);
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

/** Asserts two byte arrays are equal, reporting the first differing offset instead of a dump. */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}
