import assert from "node:assert/strict";
import { closeSync, openSync } from "node:fs";
import { PREALLOCATE_SLICE_BYTES, preallocateOffThread } from "../../src/store/preallocate.ts";

Deno.test("preallocateOffThread allocates a range larger than a slice; the file grows to cover it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blksnap-prealloc-" });
  try {
    const path = `${dir}/f`;
    const fd = openSync(path, "w+");
    const length = 2 * PREALLOCATE_SLICE_BYTES + 12345;
    const result = await preallocateOffThread(fd, { offset: 4096, length });
    closeSync(fd);
    const info = await Deno.stat(path);
    assert.equal(info.size, 4096 + length);
    if (result === "allocated") {
      assert.ok((info.blocks ?? 0) * 512 >= length, "the blocks are allocated, not a hole");
    } else {
      console.log("skipped the block check: this file system has no fallocate");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("preallocateOffThread reports the errno of a failed call (learnt again on this thread)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blksnap-prealloc-" });
  try {
    await Deno.writeFile(`${dir}/f`, new Uint8Array(0));
    const fd = openSync(`${dir}/f`, "r"); // fallocate needs a writable descriptor: EBADF
    await assert.rejects(
      preallocateOffThread(fd, { offset: 0, length: 1 << 20 }),
      (e) => (e as { errno?: number }).errno === 9,
    );
    closeSync(fd);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
