/**
 * Files with known content in the lab's file systems: write random files and remember their
 * SHA-256, check a tree of them later (on an origin or on a snapshot image), and check that a file
 * caught while a writer appended to it is a prefix of what the writer wrote.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dirname } from "node:path";
import { assertSameBytes, randomBytes, sha256 } from "./block_io.ts";
import { sha256File } from "./sh.ts";

/** Expected SHA-256 per path relative to a root folder. */
export type FileDigests = Map<string, string>;

/**
 * Writes `sizeBytes` random bytes to `root/relative` (folders created), records its SHA-256 in
 * `digests` and returns it.
 */
export async function writeRandomFile(
  root: string,
  relative: string,
  options: { sizeBytes: number; digests?: FileDigests },
): Promise<string> {
  const path = `${root}/${relative}`;
  await Deno.mkdir(dirname(path), { recursive: true });
  const data = randomBytes(options.sizeBytes);
  await Deno.writeFile(path, data);
  const digest = await sha256(data);
  options.digests?.set(relative, digest);
  return digest;
}

/** Asserts that every file of `digests` under `root` has its recorded SHA-256. */
export async function assertFiles(root: string, digests: FileDigests, what: string): Promise<void> {
  for (const [relative, digest] of digests) {
    assert.equal(await sha256File(`${root}/${relative}`), digest, `${what}: ${relative}`);
  }
}

/** True when `path` exists. */
export async function fileExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Asserts that the file `partial` holds at least `minBytes` bytes and is a prefix of `whole`.
 * Returns its length.
 */
export async function assertPrefix(
  partial: string,
  whole: Uint8Array,
  options: { minBytes: number; what: string },
): Promise<number> {
  const bytes = await Deno.readFile(partial);
  assert.ok(
    bytes.length >= options.minBytes,
    `${options.what}: ${bytes.length} bytes, expected at least ${options.minBytes}`,
  );
  assert.ok(
    bytes.length <= whole.length,
    `${options.what}: ${bytes.length} bytes, longer than all that was written (${whole.length})`,
  );
  assertSameBytes(bytes, whole.subarray(0, bytes.length), `${options.what} (as a prefix)`);
  return bytes.length;
}
