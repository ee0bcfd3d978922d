/**
 * Sparse-aware exports with real clients: `nbdinfo --map` shows a sparse
 * device file's holes on the device export, and the image export keeps the
 * origin's holes where chunks were never copied while copied chunks are
 * data; `nbdcopy` and `qemu-img convert` of the image write a sparse file
 * with the image's exact content.
 *
 * The device is an 8 MiB sparse file with data at 1 MiB (128 KiB) and 6 MiB
 * (64 KiB); chunks are 256 KiB. After take, writes land at 1 MiB (a chunk
 * with data) and 3 MiB (a chunk in a hole): both chunks are copied.
 */

import assert from "node:assert/strict";
import { Prng } from "../_helpers/prng.ts";
import { type MapExtent, mapExtents, missingTools, runToolOk } from "./_helpers/nbd_tools.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;
const CHUNK = 256 * KiB;
const HOLE = 3;
const ignore = missingTools("nbdinfo", "nbdcopy", "qemu-img");

function extents(...runs: [number, number][]): MapExtent[] {
  const out: MapExtent[] = [];
  let offset = 0;
  for (const [length, type] of runs) {
    out.push({ offset, length, type });
    offset += length;
  }
  return out;
}

async function allocatedBytes(path: string): Promise<number> {
  return ((await Deno.stat(path)).blocks ?? 0) * 512;
}

Deno.test({
  name: "sparse exports: holes on the device and the image map, nbdcopy and qemu-img stay sparse",
  ignore: ignore !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const random = new Prng(11);
      const path = await fx.createDevice(SIZE);
      const before = new Uint8Array(SIZE);
      const file = await Deno.open(path, { write: true });
      for (const [offset, length] of [[1 * MiB, 128 * KiB], [6 * MiB, 64 * KiB]]) {
        const data = random.bytes(length);
        before.set(data, offset);
        await file.seek(offset, Deno.SeekMode.Start);
        for (let done = 0; done < length;) done += await file.write(data.subarray(done));
      }
      file.close();
      const device = await fx.driver.attach(path, { name: "sparse" });
      const snapshot = await fx.driver.createSnapshot({
        deviceIds: ["sparse"],
        diffStorage: { path: `${fx.dir}/sparse.diff`, limitBytes: 64 * MiB },
      });
      const taken = await fx.driver.takeSnapshot(snapshot.id);
      const imageUri = taken.devices[0].locator!;
      await fx.writeDevice(device, 1 * MiB, random.bytes(4 * KiB));
      await fx.writeDevice(device, 3 * MiB, random.bytes(4 * KiB));

      assert.deepEqual(
        await mapExtents(device.locator, "base:allocation"),
        extents(
          [1 * MiB, HOLE],
          [128 * KiB, 0],
          [2 * MiB - 128 * KiB, HOLE],
          [4 * KiB, 0],
          [3 * MiB - 4 * KiB, HOLE],
          [64 * KiB, 0],
          [2 * MiB - 64 * KiB, HOLE],
        ),
        "device: the file's holes",
      );
      assert.deepEqual(
        await mapExtents(imageUri, "base:allocation"),
        extents(
          [1 * MiB, HOLE],
          [CHUNK, 0],
          [2 * MiB - CHUNK, HOLE],
          [CHUNK, 0],
          [3 * MiB - CHUNK, HOLE],
          [64 * KiB, 0],
          [2 * MiB - 64 * KiB, HOLE],
        ),
        "image: the origin's holes in NEW chunks, copied chunks as data",
      );

      const copied = `${fx.dir}/nbdcopy.raw`;
      await runToolOk("nbdcopy", [imageUri, copied]);
      const converted = `${fx.dir}/qemu-img.raw`;
      await runToolOk("qemu-img", ["convert", "-f", "raw", "-O", "raw", imageUri, converted]);
      for (const target of [copied, converted]) {
        assert.deepEqual(await Deno.readFile(target), before, `${target}: the image at take`);
        const allocated = await allocatedBytes(target);
        assert.ok(allocated <= 1 * MiB, `${target} is sparse: ${allocated} bytes allocated`);
      }
    } finally {
      await fx.cleanup();
    }
  },
});
