/**
 * Whole-export copies with nbdcopy in both directions against a real
 * file-backed export, compared byte for byte, over TCP and the Unix socket,
 * with one and with several connections.
 */

import assert from "node:assert/strict";
import { FileExport, MemoryExport } from "../_helpers/nbd_exports.ts";
import { pattern, runToolOk, toolsMissing, withNbdServer } from "../_helpers/nbd_fixture.ts";

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;
const ignore = toolsMissing("nbdcopy");

async function withFileExport(
  io: "async" | "sync",
  body: (exp: FileExport, path: string, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbdcopy-test-" });
  const path = `${dir}/export.img`;
  await Deno.writeFile(path, new Uint8Array(SIZE));
  const exp = await FileExport.open(path, { name: "file", io });
  try {
    await body(exp, path, dir);
  } finally {
    await exp.close();
    await Deno.remove(dir, { recursive: true });
  }
}

for (const io of ["async", "sync"] as const) {
  Deno.test({
    name: `nbdcopy: a local file copied to the export (${io} file I/O) and back is unchanged`,
    ignore,
    fn: async (t) => {
      await withFileExport(io, async (exp, exportPath, dir) => {
        const source = `${dir}/source.img`;
        const data = pattern(SIZE, 7);
        data.fill(0, 4 * MiB, 9 * MiB);
        await withNbdServer([exp], async (fixture) => {
          const cases = [
            ["TCP, one connection", fixture.tcpUri("file"), ["--connections=1"]],
            ["Unix socket, four connections", fixture.unixUri("file"), ["--connections=4"]],
          ] as const;
          let round = 0;
          for (const [name, uri, flags] of cases) {
            await t.step(name, async () => {
              round++;
              const variant = data.map((b) => b ^ round);
              await Deno.writeFile(source, variant);
              await runToolOk("nbdcopy", [...flags, "--flush", source, uri]);
              assert.ok(equal(await Deno.readFile(exportPath), variant), "export equals source");
              const back = `${dir}/back-${round}.img`;
              await runToolOk("nbdcopy", [...flags, uri, back]);
              assert.ok(equal(await Deno.readFile(back), variant), "copy back equals source");
            });
          }
          assert.deepEqual(fixture.warnings, []);
        });
      });
    },
  });
}

Deno.test({
  name: "nbdcopy: a sparse export copies to a file with its data and zeroes",
  ignore,
  fn: async () => {
    const disk = new MemoryExport({ name: "sparse", sizeBytes: 16 * MiB });
    const chunk = pattern(3 * MiB, 9);
    disk.fill(5 * MiB, chunk);
    const expected = disk.data.slice();
    const dir = await Deno.makeTempDir({ prefix: "nbdcopy-test-" });
    try {
      await withNbdServer([disk], async (fixture) => {
        await runToolOk("nbdcopy", [fixture.tcpUri("sparse"), `${dir}/out.img`]);
        const out = await Deno.readFile(`${dir}/out.img`);
        assert.ok(equal(out, expected));
        assert.ok(equal(out.subarray(5 * MiB, 8 * MiB), chunk));
        disk.data.fill(0xee);
        await runToolOk("nbdcopy", [`${dir}/out.img`, fixture.unixUri("sparse")]);
        assert.ok(equal(disk.data, expected), "zeroes and data written back");
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
