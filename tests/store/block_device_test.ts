import assert from "node:assert/strict";
import { Engine } from "../../src/engine/engine.ts";
import { splitDeviceNumber } from "../../src/store/dev_numbers.ts";
import { openStore } from "../../src/store/open_store.ts";
import { isServiceError } from "../../src/errors.ts";
import { Prng } from "../_helpers/prng.ts";

const SIZE = 8 << 20;

async function run(command: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const result = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(result.success ? result.stdout : result.stderr);
    return { ok: result.success, out: text.trim() };
  } catch (error) {
    return { ok: false, out: String(error) };
  }
}

/** Attaches a loop device to a fresh file, or says why it cannot. */
async function loopDevice(): Promise<{ device?: string; file?: string; reason?: string }> {
  const file = await Deno.makeTempFile({ prefix: "blksnap-loop-" });
  await Deno.truncate(file, SIZE);
  const attached = await run("losetup", ["--find", "--show", file]);
  if (!attached.ok || !attached.out.startsWith("/dev/")) {
    await Deno.remove(file);
    return { reason: `losetup cannot attach a loop device here: ${attached.out}` };
  }
  return { device: attached.out, file };
}

const probe = await loopDevice();
if (probe.device) await run("losetup", ["--detach", probe.device]);
if (probe.file) await Deno.remove(probe.file);
if (probe.reason) console.log(`skipped: block device tests: ${probe.reason}`);

Deno.test({
  name: "FileStore on a loop block device: capacity, minimum I/O, identity, concurrent I/O",
  ignore: probe.reason !== undefined,
  fn: async () => {
    const { device, file } = await loopDevice();
    assert.ok(device && file);
    try {
      const store = await openStore(device);
      const info = await Deno.stat(device);
      assert.deepEqual(store.identity, { kind: "block", device: info.rdev, inode: 0 });
      assert.equal(store.capacityBytes, SIZE);
      const { major, minor } = splitDeviceNumber(info.rdev!);
      const minIo = Number(
        (await Deno.readTextFile(`/sys/dev/block/${major}:${minor}/queue/minimum_io_size`)).trim(),
      );
      assert.equal(store.minIoBytes, minIo);
      await assert.rejects(store.grow(2 * SIZE), RangeError);
      const rng = new Prng(11);
      const expected = new Uint8Array(SIZE);
      await Promise.all(Array.from({ length: 256 }, (_, slot) => {
        const data = rng.bytes(4096);
        expected.set(data, slot * 32768);
        return store.write(slot * 32768, data);
      }));
      await Promise.all(Array.from({ length: 100 }, () => {
        const length = rng.range(512, 65536);
        const offset = rng.int(SIZE - length);
        const into = new Uint8Array(length);
        return store.read(offset, into).then(() => {
          assert.deepEqual(into, expected.subarray(offset, offset + length));
        });
      }));
      await store.flush();
      assert.equal(await store.refreshCapacity(), SIZE);
      await store.close();
    } finally {
      await run("losetup", ["--detach", device]);
      await Deno.remove(file);
    }
  },
});

Deno.test({
  name: "a snapshot of a loop block device with a file difference storage",
  ignore: probe.reason !== undefined,
  fn: async () => {
    const { device, file } = await loopDevice();
    assert.ok(device && file);
    const dir = await Deno.makeTempDir({ prefix: "blksnap-diff-" });
    try {
      const original = await openStore(device);
      const engine = new Engine({
        params: { chunkMinimumShift: 16, diffStorageMinimumSectors: 4096 },
      });
      const tracker = await engine.attach("loop", original);
      await tracker.write(0, new Uint8Array(SIZE).fill(1));
      const storage = await openStore(dir);
      const snapshot = await engine.createSnapshot({
        storage,
        storagePath: dir,
        limitSectors: SIZE / 512,
        trackers: ["loop"],
      });
      await snapshot.take();
      await tracker.write(12345, new Uint8Array(3 << 20).fill(2));
      const image = new Uint8Array(SIZE);
      await snapshot.image("loop").read(0, image);
      assert.ok(image.every((b) => b === 1));
      assert.ok(snapshot.storageInfo().usedBytes >= 3 << 20);
      await engine.close();
      await original.close();
      const back = new Uint8Array(4);
      const check = await openStore(file, { readOnly: true });
      await check.read(12345, back);
      assert.deepEqual([...back], [2, 2, 2, 2]);
      await check.close();
    } finally {
      await run("losetup", ["--detach", device]);
      await Deno.remove(file);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the difference storage may not be a file on a member block device's file system",
  ignore: probe.reason !== undefined,
  fn: async (t) => {
    const { device, file } = await loopDevice();
    assert.ok(device && file);
    const mountPoint = await Deno.makeTempDir({ prefix: "blksnap-mnt-" });
    let mounted = false;
    try {
      const formatted = await run("mkfs.ext4", ["-q", "-F", device]);
      const mounting = formatted.ok ? await run("mount", [device, mountPoint]) : formatted;
      if (!mounting.ok) {
        console.log(`skipped: cannot make and mount a file system here: ${mounting.out}`);
        return;
      }
      mounted = true;
      const engine = new Engine();
      const original = await openStore(device);
      await engine.attach("loop", original);
      for (
        const [name, path] of [["named file", `${mountPoint}/diff`], ["unnamed file", mountPoint]]
      ) {
        await t.step(name, async () => {
          const storage = await openStore(path, { create: true });
          assert.equal(storage.identity.device, original.identity.device);
          await assert.rejects(
            engine.createSnapshot({ storage, limitSectors: 2048, trackers: ["loop"] }),
            (e) => isServiceError(e, "INVALID_ARGUMENT") && /lives on that device/.test(e.message),
          );
        });
      }
      await engine.close();
      await original.close();
    } finally {
      if (mounted) await run("umount", [mountPoint]);
      await run("losetup", ["--detach", device]);
      await Deno.remove(file);
      await Deno.remove(mountPoint, { recursive: true });
    }
  },
});
