/**
 * Positioned I/O on block devices and files in the lab guest, as a backup tool's peers would do
 * it: writes go through the page cache and are flushed (fdatasync) before they count as done, so
 * a block-device filter sees them; reads go through the page cache too (coherent with those
 * writes). Offsets and lengths are in bytes.
 *
 * @module
 */

/**
 * Writes `data` at byte `offset` of `path` and flushes it (fdatasync) before resolving.
 *
 * @throws {Deno.errors.NotFound} when `path` does not exist (nothing is created).
 */
export async function writeAt(path: string, offset: number, data: Uint8Array): Promise<void> {
  using file = await Deno.open(path, { write: true });
  await file.seek(offset, Deno.SeekMode.Start);
  for (let done = 0; done < data.length;) {
    done += await file.write(data.subarray(done));
  }
  await file.syncData();
}

/**
 * Reads `length` bytes at byte `offset` of `path`.
 *
 * @throws {Error} when `path` ends before `offset + length`.
 */
export async function readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
  using file = await Deno.open(path, { read: true });
  await file.seek(offset, Deno.SeekMode.Start);
  const out = new Uint8Array(length);
  for (let done = 0; done < length;) {
    const count = await file.read(out.subarray(done));
    if (count === null) {
      throw new Error(`${path} ends at ${offset + done}, before ${offset + length}`);
    }
    done += count;
  }
  return out;
}

/** `length` random bytes (crypto.getRandomValues, 64 KiB at a time). */
export function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(offset + 65536, length)));
  }
  return out;
}

/** Hex SHA-256 of `data`. */
export async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Throws naming the first differing byte when `actual` and `expected` differ (a dump of two
 * large arrays would say nothing).
 */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: ${actual.length} bytes, expected ${expected.length}`);
  }
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new Error(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}
