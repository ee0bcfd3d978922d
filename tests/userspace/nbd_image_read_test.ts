/**
 * Snapshot images read by real NBD clients while the origin is being written
 * through its own export: nbdcopy copies the image and gets the origin's
 * content at take time, and qemu-img compare finds the image equal to a copy
 * made at take time (and the written origin different from it).
 */

import assert from "node:assert/strict";
import { Prng } from "../_helpers/prng.ts";
import { missingTools, runTool, runToolOk } from "./_helpers/nbd_tools.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";
import type { DeviceInfo } from "../../src/driver.ts";
import type { UserspaceFixture } from "./_helpers/userspace_fixture.ts";

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const PIECE = 4096;

/** Writes random 4 KiB-aligned pieces to `device` until `done` resolves; applies them to `model`. */
async function keepWriting(
  fx: UserspaceFixture,
  device: DeviceInfo,
  options: { seed: number; region: [number, number]; model: Uint8Array; done: Promise<unknown> },
): Promise<number> {
  const client = await fx.connect(device.locator);
  const random = new Prng(options.seed);
  const [start, end] = options.region;
  let stop = false;
  const halt = () => {
    stop = true;
  };
  options.done.then(halt, halt);
  let writes = 0;
  while (!stop) {
    const length = PIECE * random.range(1, 32);
    const offset = start + PIECE * random.int((end - start - length) / PIECE);
    const data = random.bytes(length);
    await client.pwrite(offset, data);
    options.model.set(data, offset);
    writes++;
  }
  return writes;
}

async function takenDevice(fx: UserspaceFixture) {
  const content = new Prng(1).bytes(SIZE);
  const device = await fx.driver.attach(await fx.createDevice(SIZE, { content }), {
    name: "origin",
  });
  const copyAtTake = `${fx.dir}/at-take.img`;
  await Deno.writeFile(copyAtTake, content);
  const created = await fx.driver.createSnapshot({
    deviceIds: ["origin"],
    diffStorage: { path: `${fx.dir}/diff`, limitBytes: 64 * MiB },
  });
  const taken = await fx.driver.takeSnapshot(created.id);
  return { content, device, copyAtTake, imageUri: taken.devices[0].locator! };
}

Deno.test({
  name: "nbdcopy of an image equals the origin at take time while writers keep writing to it",
  ignore: missingTools("nbdcopy") !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const { content, device, imageUri } = await takenDevice(fx);
      const model = content.slice();
      const copy = `${fx.dir}/copy.img`;
      const copying = runToolOk("nbdcopy", ["--requests=4", imageUri, copy]);
      const writers = [
        keepWriting(fx, device, { seed: 2, region: [0, SIZE / 2], model, done: copying }),
        keepWriting(fx, device, { seed: 3, region: [SIZE / 2, SIZE], model, done: copying }),
      ];
      await copying;
      const writes = await Promise.all(writers);
      assert.ok(writes.every((n) => n > 0), `writes during the copy: ${writes}`);
      console.log(`writes while nbdcopy ran: ${writes.join(" + ")}`);
      assert.deepEqual(await Deno.readFile(copy), content, "the copy is the origin at take time");
      assert.deepEqual(
        await Deno.readFile(device.path),
        model,
        "the origin kept every write",
      );
      const stats = await fx.driver.stats();
      assert.ok((stats.cowCopies ?? 0) > 0, "the writes went through copy-on-write");
    } finally {
      await fx.cleanup();
    }
  },
});

Deno.test({
  name: "qemu-img compare finds the image export equal to a copy taken at take time",
  ignore: missingTools("qemu-img") !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const { device, copyAtTake, imageUri } = await takenDevice(fx);
      const client = await fx.connect(device.locator);
      for (let i = 0; i < 16; i++) {
        await client.pwrite(i * MiB + 12 * 4096, new Prng(10 + i).bytes(8192));
      }
      const same = await runTool("qemu-img", [
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        copyAtTake,
        imageUri,
      ]);
      assert.equal(same.code, 0, `${same.stdout}${same.stderr}`);
      assert.match(same.stdout, /Images are identical/);
      const differs = await runTool("qemu-img", [
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        copyAtTake,
        device.locator,
      ]);
      assert.equal(
        differs.code,
        1,
        `the written origin differs: ${differs.stdout}${differs.stderr}`,
      );
      assert.match(differs.stdout, /Content mismatch at offset 49152/);
    } finally {
      await fx.cleanup();
    }
  },
});
