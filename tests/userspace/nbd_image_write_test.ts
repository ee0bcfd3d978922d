/**
 * Writes to snapshot image exports: a writable snapshot's image takes
 * qemu-io's pattern writes and reads them back, marks both CBT tables (the
 * read table at once with the previous change number, the write table with
 * the active one, seen after the next take), and leaves the origin
 * untouched; a read-only image refuses writes with EPERM and the connection
 * stays usable.
 */

import assert from "node:assert/strict";
import { Prng } from "../_helpers/prng.ts";
import { NbdRequestError } from "../_helpers/nbd_client.ts";
import { missingTools, nbdsh, runToolOk } from "./_helpers/nbd_tools.ts";
import { type UserspaceFixture, userspaceFixture } from "./_helpers/userspace_fixture.ts";

const KiB = 1024;
const SIZE = 1024 * KiB;
const EPERM = 1;

async function snapshotOf(fx: UserspaceFixture, writable: boolean) {
  const content = new Prng(5).bytes(SIZE);
  const device = await fx.driver.attach(await fx.createDevice(SIZE, { content }), { name: "vol" });
  const created = await fx.driver.createSnapshot({
    deviceIds: ["vol"],
    diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 26 },
    writable,
  });
  const taken = await fx.driver.takeSnapshot(created.id);
  return { content, device, snapshotId: created.id, imageUri: taken.devices[0].locator! };
}

Deno.test({
  name:
    "a writable image export takes qemu-io writes, marks both CBT tables and leaves the origin untouched",
  ignore: missingTools("qemu-io") !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const { content, device, snapshotId, imageUri } = await snapshotOf(fx, true);
      const output = await runToolOk("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0xab 196608 65536",
        "-c",
        "read -P 0xab 196608 65536",
        "-c",
        "read -P 0xab 196608 4096",
        imageUri,
      ]);
      assert.doesNotMatch(output, /Pattern verification failed|error/i, output);
      assert.match(output, /wrote 65536\/65536 bytes at offset 196608/);

      assert.deepEqual(await Deno.readFile(device.path), content, "the origin is untouched");
      const image = new Uint8Array(SIZE);
      await fx.driver.readImage(snapshotId, "vol", 0, image);
      const expected = content.slice();
      expected.fill(0xab, 196608, 196608 + 65536);
      assert.deepEqual(image, expected, "the image holds the write, the rest as at take");

      const info = await fx.driver.cbtInfo("vol");
      assert.equal(info.changesNumber, 1);
      const readTable = await fx.driver.readCbtMap("vol", { offset: 0, length: info.blockCount });
      assert.deepEqual([...readTable], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

      await fx.driver.destroySnapshot(snapshotId);
      const next = await fx.driver.createSnapshot({
        deviceIds: ["vol"],
        diffStorage: { path: `${fx.dir}/diff2`, limitBytes: 1 << 26 },
      });
      await fx.driver.takeSnapshot(next.id);
      const after = await fx.driver.readCbtMap("vol", { offset: 0, length: info.blockCount });
      assert.equal((await fx.driver.cbtInfo("vol")).changesNumber, 2);
      assert.deepEqual(
        [...after],
        [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "the write table carried the active number into the next take",
      );
    } finally {
      await fx.cleanup();
    }
  },
});

Deno.test({
  name: "a read-only image export refuses writes with EPERM (nbdsh) and stays usable",
  ignore: missingTools("nbdsh") !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const { content, device, imageUri } = await snapshotOf(fx, false);
      const output = await nbdsh(
        imageUri,
        [
          "h.set_strict_mode(0)",
          "h.connect_uri(uri)",
          "print('read_only', h.is_read_only())",
          "try:",
          "    h.pwrite(b'x' * 4096, 8192)",
          "    print('written')",
          "except nbd.Error as e:",
          "    print('errno', e.errno, '|', e.string)",
          "print('after', h.pread(16, 8192).hex())",
          "h.shutdown()",
        ].join("\n"),
      );
      assert.match(output, /read_only True/);
      // Strict mode off, so libnbd sends the WRITE and reports the server's reply.
      assert.match(output, /errno EPERM \|/, output);
      assert.doesNotMatch(
        output,
        /does not support|read-only/i,
        "refused by the server, not libnbd",
      );
      const tail = Array.from(content.subarray(8192, 8208), (b) => b.toString(16).padStart(2, "0"))
        .join("");
      assert.match(output, new RegExp(`after ${tail}`), "the connection still reads");
      assert.deepEqual(await Deno.readFile(device.path), content, "the origin is untouched");
    } finally {
      await fx.cleanup();
    }
  },
});

Deno.test("a read-only image export answers a WRITE with EPERM and keeps the connection", async () => {
  const fx = await userspaceFixture();
  try {
    const { content, imageUri } = await snapshotOf(fx, false);
    const client = await fx.connect(imageUri);
    assert.equal(client.readOnly, true);
    const refused = await client.pwrite(0, new Uint8Array(512)).then(() => undefined, (e) => e);
    assert.ok(refused instanceof NbdRequestError, `${refused}`);
    assert.equal(refused.errno, EPERM);
    assert.deepEqual(await client.pread(0, 4096), content.subarray(0, 4096));
  } finally {
    await fx.cleanup();
  }
});
