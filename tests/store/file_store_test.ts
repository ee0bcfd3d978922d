import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { fileSystemError, openStore } from "../../src/store/open_store.ts";
import { Prng } from "../_helpers/prng.ts";

async function withTempDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "blksnap-store-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const isRoot = Deno.uid() === 0;

Deno.test("openStore() creates a missing file when asked, NOT_FOUND otherwise", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(openStore(`${dir}/missing`), (e) => isServiceError(e, "NOT_FOUND"));
    const store = await openStore(`${dir}/new`, { create: true });
    assert.equal(store.capacityBytes, 0);
    assert.equal(store.identity.kind, "file");
    assert.equal(store.minIoBytes, 512);
    assert.equal(store.name, `${dir}/new`);
    await store.close();
    assert.equal((await Deno.stat(`${dir}/new`)).isFile, true);
  });
});

Deno.test("FileStore serves many concurrent positioned reads and writes correctly", async () => {
  await withTempDir(async (dir) => {
    const size = 4 << 20;
    await Deno.writeFile(`${dir}/data`, new Uint8Array(size));
    const store = await openStore(`${dir}/data`);
    assert.equal(store.capacityBytes, size);
    const rng = new Prng(7);
    const expected = new Uint8Array(size);
    // 512 slots of 8 KiB, written in random order, all in flight at once.
    const slots = Array.from({ length: 512 }, (_, i) => i).sort(() => rng.next() - 0.5);
    await Promise.all(slots.map((slot) => {
      const data = rng.bytes(rng.range(1, 8192));
      expected.set(data, slot * 8192);
      return store.write(slot * 8192, data);
    }));
    const reads = Array.from({ length: 400 }, () => {
      const length = rng.range(1, 65536);
      const offset = rng.int(size - length);
      const into = new Uint8Array(length);
      return store.read(offset, into).then(() => {
        assert.deepEqual(into, expected.subarray(offset, offset + length));
      });
    });
    await Promise.all(reads);
    await store.flush();
    await store.close();
    assert.deepEqual(await Deno.readFile(`${dir}/data`), expected);
  });
});

Deno.test("FileStore refuses I/O past its capacity and after close", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/f`, new Uint8Array(1000));
    const store = await openStore(`${dir}/f`);
    await assert.rejects(store.read(999, new Uint8Array(2)), RangeError);
    await assert.rejects(store.write(1000, new Uint8Array(1)), RangeError);
    await store.close();
    await assert.rejects(store.read(0, new Uint8Array(1)), /closed/);
    await store.close();
  });
});

Deno.test("FileStore.grow() extends a file (sparse) and refreshCapacity() sees outside changes", async () => {
  await withTempDir(async (dir) => {
    const store = await openStore(`${dir}/g`, { create: true });
    await store.grow(1 << 20);
    assert.equal(store.capacityBytes, 1 << 20);
    assert.equal((await Deno.stat(`${dir}/g`)).size, 1 << 20);
    await store.write((1 << 20) - 1, new Uint8Array([5]));
    const zeros = new Uint8Array(4096);
    await store.read(4096, zeros);
    assert.ok(zeros.every((b) => b === 0));
    await store.grow(4096); // smaller: no change
    assert.equal(store.capacityBytes, 1 << 20);
    await Deno.truncate(`${dir}/g`, 3 << 20);
    assert.equal(await store.refreshCapacity(), 3 << 20);
    await store.close();
  });
});

Deno.test("FileStore reads and writes at positions beyond 4 GiB (sparse file)", async () => {
  await withTempDir(async (dir) => {
    const store = await openStore(`${dir}/big`, { create: true });
    await store.grow(5 * 2 ** 30);
    const offset = 4.5 * 2 ** 30 + 123;
    await store.write(offset, new Uint8Array([1, 2, 3, 4]));
    const back = new Uint8Array(6);
    await store.read(offset - 1, back);
    assert.deepEqual([...back], [0, 1, 2, 3, 4, 0]);
    await store.close();
  });
});

Deno.test("FileStore identity: device and inode of the file", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/a`, new Uint8Array(1));
    await Deno.writeFile(`${dir}/b`, new Uint8Array(1));
    const a1 = await openStore(`${dir}/a`);
    const a2 = await openStore(`${dir}/a`, { readOnly: true });
    const b = await openStore(`${dir}/b`);
    const info = await Deno.stat(`${dir}/a`);
    assert.deepEqual(a1.identity, { kind: "file", device: info.dev, inode: info.ino });
    assert.deepEqual(a2.identity, a1.identity);
    assert.equal(b.identity.device, a1.identity.device);
    assert.notEqual(b.identity.inode, a1.identity.inode);
    for (const store of [a1, a2, b]) await store.close();
  });
});

Deno.test("a read-only FileStore refuses writes and growth", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/r`, new Uint8Array([1, 2, 3]));
    const store = await openStore(`${dir}/r`, { readOnly: true });
    const back = new Uint8Array(3);
    await store.read(0, back);
    assert.deepEqual([...back], [1, 2, 3]);
    await assert.rejects(store.write(0, new Uint8Array(1)), /read-only/);
    await assert.rejects(store.grow(4096), /read-only/);
    await store.close();
  });
});

Deno.test("openStore() on a directory makes an unnamed file that leaves nothing behind", async () => {
  await withTempDir(async (dir) => {
    const store = await openStore(dir);
    assert.equal(store.name, `${dir} (unnamed file)`);
    assert.equal(store.identity.kind, "file");
    assert.deepEqual([...Deno.readDirSync(dir)], [], "unlinked at once");
    await store.grow(65536);
    await store.write(60000, new Uint8Array([1, 2]));
    const back = new Uint8Array(2);
    await store.read(60000, back);
    assert.deepEqual([...back], [1, 2]);
    await store.close();
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    await assert.rejects(
      openStore(dir, { readOnly: true }),
      (e) => isServiceError(e, "INVALID_ARGUMENT"),
    );
  });
});

Deno.test("openStore() refuses character devices and FIFOs", async () => {
  await assert.rejects(openStore("/dev/null"), (e) => isServiceError(e, "INVALID_ARGUMENT"));
  await withTempDir(async (dir) => {
    const made = await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
    assert.ok(made.success, "mkfifo works");
    await assert.rejects(openStore(`${dir}/fifo`), (e) => isServiceError(e, "INVALID_ARGUMENT"));
  });
});

Deno.test("fileSystemError() maps errno codes to ServiceError codes", () => {
  const error = (code: string) => Object.assign(new Error(code), { code });
  assert.equal(fileSystemError(error("EACCES"), "x").code, "FORBIDDEN");
  assert.equal(fileSystemError(error("ENOENT"), "x").code, "NOT_FOUND");
  assert.equal(fileSystemError(error("ENOSPC"), "x").code, "STORAGE_EXHAUSTED");
  assert.equal(fileSystemError(error("EIO"), "x").code, "IO");
  assert.equal(fileSystemError(new Error("odd"), "x").code, "IO");
  assert.match(
    fileSystemError(error("EACCES"), "Cannot open /x").message,
    /Cannot open \/x \(EACCES\)/,
  );
});

Deno.test({
  name: "openStore() without permission is FORBIDDEN",
  ignore: isRoot,
  fn: async () => {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/locked`, new Uint8Array(1), { mode: 0o000 });
      await assert.rejects(openStore(`${dir}/locked`), (e) => isServiceError(e, "FORBIDDEN"));
    });
  },
});
if (isRoot) {
  console.log(
    "skipped: openStore() FORBIDDEN test needs a non-root user (root bypasses file modes)",
  );
}
