/**
 * The server as nbdinfo (libnbd) sees it: the export list with descriptions
 * and flags, sizes, and exact extent maps for base:allocation and for the
 * dirty-bitmap context, over TCP and the Unix socket.
 */

import assert from "node:assert/strict";
import { DIRTY_CONTEXT, MemoryExport } from "../_helpers/nbd_exports.ts";
import { runToolOk, toolsMissing, withNbdServer } from "../_helpers/nbd_fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const ignore = toolsMissing("nbdinfo");

function exports(): MemoryExport[] {
  const disk = new MemoryExport({ name: "disk", sizeBytes: 4 * MiB, description: "tracked disk" });
  disk.fill(MiB, new Uint8Array(64 * KiB).fill(1));
  disk.fill(3 * MiB, new Uint8Array(4 * KiB).fill(2));
  disk.markDirty(0, 1);
  disk.markDirty(2 * MiB, 192 * KiB);
  const image = new MemoryExport({
    name: "disk@snap 1",
    sizeBytes: 2 * MiB,
    readOnly: true,
    description: "snapshot image",
  });
  return [disk, image];
}

interface ListedExport {
  "export-name": string;
  description?: string;
  "export-size": number;
  contexts: string[];
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fast_zero: boolean;
  can_multi_conn: boolean;
  can_df: boolean;
  can_cache: boolean;
}

Deno.test({
  name: "nbdinfo --list shows every export with its description and truthful flags",
  ignore,
  fn: async () => {
    await withNbdServer(exports(), async (fixture) => {
      for (const uri of [fixture.tcpUri(""), fixture.unixUri("")]) {
        const listed = JSON.parse(await runToolOk("nbdinfo", ["--list", "--json", uri]));
        assert.equal(listed.protocol, "newstyle-fixed");
        assert.equal(listed.structured, true);
        const byName = new Map<string, ListedExport>(
          listed.exports.map((e: ListedExport) => [e["export-name"], e]),
        );
        assert.deepEqual([...byName.keys()], ["disk", "disk@snap 1"]);
        const disk = byName.get("disk")!;
        assert.equal(disk.description, "tracked disk");
        assert.equal(disk["export-size"], 4 * MiB);
        assert.deepEqual(disk.contexts, ["base:allocation", DIRTY_CONTEXT]);
        assert.deepEqual(
          [disk.is_read_only, disk.can_flush, disk.can_fua, disk.can_trim, disk.can_zero],
          [false, true, true, true, true],
        );
        assert.deepEqual(
          [disk.can_fast_zero, disk.can_multi_conn, disk.can_df, disk.can_cache],
          [true, true, true, false],
        );
        const image = byName.get("disk@snap 1")!;
        assert.equal(image.description, "snapshot image");
        assert.equal(image["export-size"], 2 * MiB);
        assert.deepEqual(
          [image.is_read_only, image.can_fua, image.can_trim, image.can_zero, image.can_fast_zero],
          [true, false, false, false, false],
        );
      }
    });
  },
});

Deno.test({
  name: "nbdinfo --size reports each export's size",
  ignore,
  fn: async () => {
    await withNbdServer(exports(), async (fixture) => {
      assert.equal(
        (await runToolOk("nbdinfo", ["--size", fixture.tcpUri("disk")])).trim(),
        "4194304",
      );
      assert.equal(
        (await runToolOk("nbdinfo", ["--size", fixture.unixUri("disk@snap 1")])).trim(),
        "2097152",
      );
      assert.equal((await runToolOk("nbdinfo", ["--size", fixture.tcpUri("")])).trim(), "4194304");
    });
  },
});

Deno.test({
  name: "nbdinfo --map reports the exact base:allocation extents",
  ignore,
  fn: async () => {
    await withNbdServer(exports(), async (fixture) => {
      const map = JSON.parse(
        await runToolOk("nbdinfo", ["--map", "--json", fixture.tcpUri("disk")]),
      );
      assert.deepEqual(
        map.map((
          e: { offset: number; length: number; type: number },
        ) => [e.offset, e.length, e.type]),
        [
          [0, MiB, 3],
          [MiB, 64 * KiB, 0],
          [MiB + 64 * KiB, 2 * MiB - 64 * KiB, 3],
          [3 * MiB, 4 * KiB, 0],
          [3 * MiB + 4 * KiB, MiB - 4 * KiB, 3],
        ],
      );
    });
  },
});

Deno.test({
  name: "nbdinfo --map=qemu:dirty-bitmap:test reports the exact dirty extents",
  ignore,
  fn: async () => {
    await withNbdServer(exports(), async (fixture) => {
      const map = JSON.parse(
        await runToolOk("nbdinfo", [`--map=${DIRTY_CONTEXT}`, "--json", fixture.unixUri("disk")]),
      );
      assert.deepEqual(
        map.map((
          e: { offset: number; length: number; type: number },
        ) => [e.offset, e.length, e.type]),
        [
          [0, 64 * KiB, 1],
          [64 * KiB, 2 * MiB - 64 * KiB, 0],
          [2 * MiB, 192 * KiB, 1],
          [2 * MiB + 192 * KiB, 2 * MiB - 192 * KiB, 0],
        ],
      );
    });
  },
});
