/**
 * The server driven by QEMU's NBD client: qemu-img info, map (base:allocation
 * and the dirty bitmap through x-dirty-bitmap, as incremental backup tools
 * read it), compare and convert in both directions, and qemu-io write/read
 * with verified patterns.
 */

import assert from "node:assert/strict";
import { DIRTY_CONTEXT, FileExport, MemoryExport } from "../_helpers/nbd_exports.ts";
import {
  pattern,
  runTool,
  runToolOk,
  toolsMissing,
  withNbdServer,
} from "../_helpers/nbd_fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const ignore = toolsMissing("qemu-img", "qemu-io");

interface MapEntry {
  start: number;
  length: number;
  zero: boolean;
  data: boolean;
}

function sparseDisk(): MemoryExport {
  const disk = new MemoryExport({ name: "disk", sizeBytes: 4 * MiB });
  disk.fill(MiB, pattern(64 * KiB, 1));
  disk.markDirty(2 * MiB, 128 * KiB);
  return disk;
}

Deno.test({
  name: "qemu-img info reads the size of a raw export",
  ignore,
  fn: async () => {
    await withNbdServer([sparseDisk()], async (fixture) => {
      const info = JSON.parse(
        await runToolOk("qemu-img", ["info", "--output=json", fixture.tcpUri("disk")]),
      );
      assert.equal(info["virtual-size"], 4 * MiB);
      assert.equal(info.format, "raw");
    });
  },
});

Deno.test({
  name: "qemu-img map sees base:allocation holes and, with x-dirty-bitmap, the dirty blocks",
  ignore,
  fn: async () => {
    await withNbdServer([sparseDisk()], async (fixture) => {
      const simplify = (out: string) =>
        JSON.parse(out).map((e: MapEntry) => [e.start, e.length, e.zero, e.data]);
      const allocation = simplify(
        await runToolOk("qemu-img", ["map", "--output=json", fixture.tcpUri("disk")]),
      );
      assert.deepEqual(allocation, [
        [0, MiB, true, false],
        [MiB, 64 * KiB, false, true],
        [MiB + 64 * KiB, 3 * MiB - 64 * KiB, true, false],
      ]);
      const options = [
        "driver=nbd",
        "server.type=unix",
        `server.path=${fixture.server.unixPath}`,
        "export=disk",
        `x-dirty-bitmap=${DIRTY_CONTEXT}`,
      ].join(",");
      const dirty = simplify(
        await runToolOk("qemu-img", ["map", "--output=json", "--image-opts", options]),
      );
      // QEMU reports dirty extents as not data (the dirty bit is read as NBD_STATE_HOLE).
      assert.deepEqual(dirty, [
        [0, 2 * MiB, false, true],
        [2 * MiB, 128 * KiB, false, false],
        [2 * MiB + 128 * KiB, 2 * MiB - 128 * KiB, false, true],
      ]);
    });
  },
});

Deno.test({
  name: "qemu-img convert copies both ways and compare sees identical images",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "qemu-test-" });
    try {
      const exportPath = `${dir}/export.img`;
      await Deno.writeFile(exportPath, new Uint8Array(8 * MiB));
      const source = pattern(8 * MiB, 3);
      source.fill(0, 2 * MiB, 5 * MiB);
      await Deno.writeFile(`${dir}/source.img`, source);
      const exp = await FileExport.open(exportPath, { name: "file" });
      try {
        await withNbdServer([exp], async (fixture) => {
          const uri = fixture.tcpUri("file");
          await runToolOk("qemu-img", [
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            `${dir}/source.img`,
            uri,
          ]);
          await runToolOk("qemu-img", [
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            uri,
            `${dir}/source.img`,
          ]);
          await runToolOk("qemu-img", [
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            fixture.unixUri("file"),
            `${dir}/back.img`,
          ]);
          assert.deepEqual(await Deno.readFile(`${dir}/back.img`), source);
          await Deno.writeFile(
            `${dir}/other.img`,
            source.map((b, i) => (i === 7 * MiB ? b ^ 1 : b)),
          );
          const differ = await runTool("qemu-img", [
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            uri,
            `${dir}/other.img`,
          ]);
          assert.equal(differ.code, 1, "compare notices a one-byte difference");
        });
      } finally {
        await exp.close();
      }
      assert.deepEqual(await Deno.readFile(exportPath), source);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "qemu-io writes patterns, zeroes and discards, and reads them back verified",
  ignore,
  fn: async () => {
    const disk = new MemoryExport({ name: "disk", sizeBytes: 4 * MiB });
    await withNbdServer([disk], async (fixture) => {
      const out = await runToolOk("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0xab 0 64k",
        "-c",
        "write -P 0xcd 1M 512k",
        "-c",
        "write -z 1056k 96k",
        "-c",
        "discard 1152k 64k",
        "-c",
        "flush",
        "-c",
        "read -P 0xab 0 64k",
        "-c",
        "read -P 0xcd 1M 32k",
        "-c",
        "read -P 0 1056k 96k",
        "-c",
        "read -P 0 1152k 64k",
        "-c",
        "read -P 0xcd 1216k 320k",
        fixture.tcpUri("disk"),
      ]);
      assert.doesNotMatch(out, /failed/i);
      const wrong = await runTool("qemu-io", [
        "-f",
        "raw",
        "-c",
        "read -P 0xac 0 64k",
        fixture.unixUri("disk"),
      ]);
      assert.equal(wrong.code, 1);
      assert.match(wrong.stdout, /Pattern verification failed/);
    });
    assert.ok(disk.data.subarray(0, 64 * KiB).every((b) => b === 0xab));
    assert.ok(disk.data.subarray(MiB, MiB + 32 * KiB).every((b) => b === 0xcd));
    assert.ok(disk.data.subarray(1056 * KiB, 1216 * KiB).every((b) => b === 0));
    assert.ok(disk.flushes >= 1);
  },
});
