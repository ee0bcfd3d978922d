import assert from "node:assert/strict";
import { join } from "node:path";
import { DIRECT_ALIGNMENT, directReadBlock } from "../../src/consistency/direct_read.ts";
import { ServiceError } from "../../src/errors.ts";
import { pattern } from "../_helpers/nbd_fixture.ts";

/** A 64 KiB file of a pattern in a folder of the repository (tmpfs may refuse O_DIRECT). */
async function withFile(body: (path: string, contents: Uint8Array) => Promise<void>) {
  const dir = await Deno.makeTempDir({ dir: Deno.cwd(), prefix: ".direct-read-" });
  const path = join(dir, "disk.img");
  const contents = pattern(64 * 1024, 7);
  await Deno.writeFile(path, contents);
  try {
    await body(path, contents);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("directReadBlock() reads an aligned block with O_DIRECT and changes nothing", async () => {
  await withFile(async (path, contents) => {
    const before = await Deno.stat(path);
    await directReadBlock(path, 5 * DIRECT_ALIGNMENT, DIRECT_ALIGNMENT);
    await directReadBlock(path, 0, 4 * DIRECT_ALIGNMENT);
    assert.deepEqual(await Deno.readFile(path), contents);
    assert.equal((await Deno.stat(path)).mtime?.getTime(), before.mtime?.getTime());
  });
});

Deno.test("directReadBlock() refuses unaligned requests and reports a path it cannot open", async () => {
  await withFile(async (path) => {
    await assert.rejects(() => directReadBlock(path, 512, DIRECT_ALIGNMENT), RangeError);
    await assert.rejects(() => directReadBlock(path, 0, 100), RangeError);
    await assert.rejects(() => directReadBlock(path, 0, 0), RangeError);
    await assert.rejects(
      () => directReadBlock(`${path}.missing`, 0, DIRECT_ALIGNMENT),
      (error) => error instanceof ServiceError && error.code === "UNAVAILABLE",
    );
  });
});
