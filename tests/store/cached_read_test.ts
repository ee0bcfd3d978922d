import assert from "node:assert/strict";
import { closeSync, fdatasyncSync, openSync, writeSync } from "node:fs";
import { acquireCachedReads, readCached, releaseCachedReads } from "../../src/store/cached_read.ts";
import { openStore } from "../../src/store/open_store.ts";

const PAGE = 4096;

function pattern(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + (i >> 12)) & 0xff);
}

/** Drops `fd`'s clean pages from the page cache (posix_fadvise POSIX_FADV_DONTNEED). */
function dropCache(fd: number): void {
  const libc = Deno.dlopen("libc.so.6", {
    posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
  });
  try {
    assert.equal(libc.symbols.posix_fadvise(fd, 0n, 0n, 4), 0);
  } finally {
    libc.close();
  }
}

async function withFile(
  run: (path: string, data: Uint8Array) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/disk.img`;
  const data = pattern(64 * PAGE);
  await Deno.writeFile(path, data);
  try {
    await run(path, data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("readCached() copies cached pages at once and says when the disk is needed", async () => {
  await withFile((path, data) => {
    const fd = openSync(path, "r+");
    acquireCachedReads();
    try {
      const into = new Uint8Array(2 * PAGE);
      assert.equal(readCached(fd, 8 * PAGE, into), 2 * PAGE);
      assert.deepEqual(into, data.subarray(8 * PAGE, 10 * PAGE));
      assert.equal(readCached(fd, 64 * PAGE, into), 0, "end of file");
      fdatasyncSync(fd);
      dropCache(fd);
      assert.equal(readCached(fd, 32 * PAGE, into), "not-cached");
    } finally {
      releaseCachedReads();
      closeSync(fd);
    }
  });
});

Deno.test("readCached() without a reference held reports the fast path unsupported", async () => {
  await withFile((path) => {
    const fd = openSync(path, "r");
    try {
      assert.equal(readCached(fd, 0, new Uint8Array(PAGE)), "unsupported");
    } finally {
      closeSync(fd);
    }
  });
});

Deno.test("FileStore reads cold and partly cached ranges exactly, through the fallback", async () => {
  await withFile(async (path, data) => {
    const store = await openStore(path);
    try {
      const fd = openSync(path, "r+");
      writeSync(fd, data.subarray(20 * PAGE, 21 * PAGE), 0, PAGE, 20 * PAGE);
      fdatasyncSync(fd);
      dropCache(fd);
      const warm = new Uint8Array(PAGE);
      writeSync(fd, pattern(PAGE), 0, PAGE, 0);
      closeSync(fd);
      await store.read(0, warm);
      assert.deepEqual(warm, pattern(PAGE));
      const all = new Uint8Array(64 * PAGE);
      await store.read(0, all);
      const expected = data.slice();
      expected.set(pattern(PAGE), 0);
      assert.deepEqual(all, expected);
    } finally {
      await store.close();
    }
  });
});
