import assert from "node:assert/strict";
import { closeSync, openSync } from "node:fs";
import { Engine } from "../../src/engine/engine.ts";
import { ChunkState } from "../../src/engine/chunk.ts";
import type { FileStore } from "../../src/store/file_store.ts";
import { copyFileRange, kernelCopyWay } from "../../src/store/kernel_copy.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { openStore } from "../../src/store/open_store.ts";
import { Prng } from "../_helpers/prng.ts";

const MiB = 1 << 20;

async function withTempDir(base: string | undefined, run: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "blksnap-kcopy-", dir: base });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** /dev/shm when it is another file system than the temporary directory (copy_file_range refuses there). */
async function otherFileSystem(): Promise<string | undefined> {
  try {
    const shm = await Deno.stat("/dev/shm");
    const tmp = await Deno.stat(Deno.env.get("TMPDIR") ?? "/tmp");
    return shm.isDirectory && shm.dev !== tmp.dev ? "/dev/shm" : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The source's bytes and the target's 0xee; the source written back and
 * dropped from the page cache unless `cached`, so that FileStore.copyTo
 * takes the kernel's way and not a copy through memory.
 */
async function pair(source: string, target: string, bytes: Uint8Array, cached = false) {
  await Deno.writeFile(source, bytes);
  await Deno.writeFile(target, new Uint8Array(bytes.length).fill(0xee));
  if (!cached) await uncache(source);
  return { from: await openStore(source), to: await openStore(target) };
}

/** Writes `path` back and drops it from the page cache (POSIX_FADV_DONTNEED, through dd). */
async function uncache(path: string): Promise<void> {
  const file = await Deno.open(path, { read: true, write: true });
  try {
    await file.syncData();
  } finally {
    file.close();
  }
  const dd = await new Deno.Command("dd", {
    args: [`if=${path}`, "iflag=nocache", "count=0", "status=none"],
  }).output();
  assert.equal(dd.code, 0, new TextDecoder().decode(dd.stderr));
}

async function checkCopies(from: FileStore, to: FileStore, bytes: Uint8Array, target: string) {
  const pieces = [[0, 256 * 1024, 512 * 1024], [MiB, 300_000, 4096], [3 * MiB, MiB, 2 * MiB]];
  // The first copy of a pair runs on the calling thread, the others (at once) off it.
  assert.equal(
    await from.copyTo(pieces[0][0], pieces[0][1], { target: to, targetOffset: pieces[0][2] }),
    "copied",
  );
  const rest = await Promise.all(
    pieces.slice(1).map(([offset, length, at]) =>
      from.copyTo(offset, length, { target: to, targetOffset: at })
    ),
  );
  assert.deepEqual(rest, ["copied", "copied"]);
  const expected = new Uint8Array(bytes.length).fill(0xee);
  for (const [offset, length, at] of pieces) {
    expected.set(bytes.subarray(offset, offset + length), at);
  }
  await to.flush();
  assert.deepEqual(await Deno.readFile(target), expected);
}

Deno.test("FileStore.copyTo on one file system copies with copy_file_range", async () => {
  await withTempDir(undefined, async (dir) => {
    const bytes = new Prng(7).bytes(4 * MiB);
    const { from, to } = await pair(`${dir}/a`, `${dir}/b`, bytes);
    await checkCopies(from, to, bytes, `${dir}/b`);
    assert.equal(kernelCopyWay(from.fd, to.fd), "copy_file_range");
    await from.close();
    await to.close();
  });
});

Deno.test("FileStore.copyTo copies what the page cache holds through memory, the rest in the kernel", async () => {
  await withTempDir(undefined, async (dir) => {
    const bytes = new Prng(10).bytes(4 * MiB);
    const { from, to } = await pair(`${dir}/a`, `${dir}/b`, bytes, true);
    await checkCopies(from, to, bytes, `${dir}/b`);
    assert.equal(kernelCopyWay(from.fd, to.fd), undefined, "no kernel copy was made");
    await uncache(`${dir}/a`);
    assert.equal(await from.copyTo(0, MiB, { target: to, targetOffset: 0 }), "copied");
    assert.equal(kernelCopyWay(from.fd, to.fd), "copy_file_range");
    const copied = new Uint8Array(MiB);
    await to.read(0, copied);
    assert.deepEqual(copied, bytes.subarray(0, MiB));
    await from.close();
    await to.close();
  });
});

Deno.test("FileStore.copyTo across file systems falls back to splice through a pipe", async () => {
  const other = await otherFileSystem();
  if (other === undefined) {
    console.log(
      "skipped: /dev/shm is missing or on the same file system as the temporary directory",
    );
    return;
  }
  await withTempDir(undefined, (dir) =>
    withTempDir(other, async (far) => {
      const bytes = new Prng(8).bytes(4 * MiB);
      const { from, to } = await pair(`${dir}/a`, `${far}/b`, bytes);
      await checkCopies(from, to, bytes, `${far}/b`);
      assert.equal(kernelCopyWay(from.fd, to.fd), "splice");
      await from.close();
      await to.close();
    }));
});

Deno.test("kernel copies the kernel refuses leave the target alone; other stores are refused", async () => {
  await withTempDir(undefined, async (dir) => {
    const bytes = new Prng(9).bytes(MiB);
    const { from, to } = await pair(`${dir}/a`, `${dir}/b`, bytes);
    const readOnly = openSync(`${dir}/b`, "r"); // EBADF for both ways
    const range = { fromOffset: 0, to: readOnly, toOffset: 0, length: 65536 };
    assert.equal(await copyFileRange(from.fd, range), "refused");
    assert.equal(kernelCopyWay(from.fd, readOnly), "refused");
    assert.equal(await copyFileRange(from.fd, range), "refused", "remembered");
    closeSync(readOnly);
    assert.deepEqual(await Deno.readFile(`${dir}/b`), new Uint8Array(MiB).fill(0xee));
    const memory = new MemoryStore({ capacityBytes: MiB });
    assert.equal(await from.copyTo(0, 4096, { target: memory, targetOffset: 0 }), "refused");
    await assert.rejects(from.copyTo(MiB - 10, 20, { target: to, targetOffset: 0 }), RangeError);
    await from.close();
    await to.close();
  });
});

Deno.test("a kernel copy that fails after its pair worked rejects with EIO, both ways", async () => {
  const other = await otherFileSystem();
  await withTempDir(undefined, (dir) =>
    withTempDir(other, async (far) => {
      for (const target of other ? [`${dir}/b`, `${far}/b`] : [`${dir}/b`]) {
        const { from, to } = await pair(`${dir}/a`, target, new Prng(10).bytes(MiB));
        const range = { fromOffset: 0, to: to.fd, toOffset: 0, length: 65536 };
        assert.equal(await copyFileRange(from.fd, range), "copied");
        // Past the source's end: the copy stops early (off the thread, then again on it).
        await assert.rejects(
          copyFileRange(from.fd, { ...range, fromOffset: MiB - 4096 }),
          (e) => (e as { code?: string }).code === "EIO",
        );
        await from.close();
        await to.close();
      }
    }));
});

Deno.test("an engine on files copies chunks store to store: STORED at once, images exact", async () => {
  const other = await otherFileSystem();
  for (const storageDir of other ? [undefined, other] : [undefined]) {
    await withTempDir(undefined, (dir) =>
      withTempDir(storageDir, async (far) => {
        const bytes = new Prng(11).bytes(4 * MiB);
        await Deno.writeFile(`${dir}/disk`, bytes);
        const engine = new Engine();
        const device = await openStore(`${dir}/disk`);
        const tracker = await engine.attach("disk", device);
        const snapshot = await engine.createSnapshot({
          storage: await openStore(`${far}/diff`, { create: true }),
          limitSectors: (8 * MiB) / 512,
          trackers: ["disk"],
        });
        await snapshot.take();
        const image = snapshot.image("disk");
        const chunk = image.chunkSizeBytes;
        const writes = [[0, chunk], [chunk + 100, 5000], [2 * MiB - 10, 3 * chunk]];
        await Promise.all(writes.map(([offset, length], i) =>
          tracker.write(offset, new Uint8Array(length).fill(i + 1))
        ));
        for (const [offset] of writes) {
          assert.equal(image.chunkState(offset).state, ChunkState.STORED);
        }
        assert.equal(snapshot.diffArea("disk")!.counters().allocatedBuffers, 0, "no chunk buffers");
        const read = new Uint8Array(4 * MiB);
        await image.read(0, read);
        assert.deepEqual(read, bytes, "the image reads as at take");
        const now = await Deno.readFile(`${dir}/disk`);
        for (const [offset, length] of writes) {
          assert.equal(
            now[offset + length - 1],
            writes.findIndex((w) =>
              w[0] === offset
            ) + 1,
          );
        }
        await snapshot.destroy();
        await engine.close();
        await device.close();
      }));
  }
});
