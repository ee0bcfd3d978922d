import assert from "node:assert/strict";
import { NbdClient, parseNbdUri } from "../../src/nbd/client.ts";
import { BASE_ALLOCATION, NBD_STATE_HOLE, NBD_STATE_ZERO } from "../../src/nbd/constants.ts";
import { isServiceError } from "../../src/errors.ts";
import { DIRTY_BLOCK, DIRTY_CONTEXT, MemoryExport } from "../_helpers/nbd_exports.ts";
import { pattern, toolsMissing, withNbdServer } from "../_helpers/nbd_fixture.ts";

const MIB = 1 << 20;

Deno.test("parseNbdUri() reads both locator forms and refuses others", () => {
  assert.deepEqual(parseNbdUri("nbd://127.0.0.1:10810/vda%40x"), {
    target: { hostname: "127.0.0.1", port: 10810 },
    name: "vda@x",
  });
  assert.deepEqual(parseNbdUri("nbd+unix:///vda?socket=/run/nbd.sock"), {
    target: { path: "/run/nbd.sock" },
    name: "vda",
  });
  assert.throws(() => parseNbdUri("http://x/y"), (e) => isServiceError(e, "INVALID_ARGUMENT"));
});

Deno.test("NbdClient reads pipelined, out of order, over TCP and a Unix socket", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: 4 * MIB, readDelayMs: 1 });
  const content = pattern(4 * MIB, 7);
  disk.fill(0, content);
  await withNbdServer([disk], async (fixture) => {
    for (const uri of [fixture.tcpUri("disk"), fixture.unixUri("disk")]) {
      const client = await NbdClient.connect(uri);
      try {
        assert.equal(client.sizeBytes, 4 * MIB);
        const pieces = Array.from({ length: 16 }, (_, i) => ({
          offset: (15 - i) * 256 * 1024 + 17,
          into: new Uint8Array(100_000 + i),
        })).filter((p) => p.offset + p.into.length <= 4 * MIB);
        await Promise.all(pieces.map((p) => client.pread(p.offset, p.into)));
        for (const p of pieces) {
          assert.deepEqual(p.into, content.subarray(p.offset, p.offset + p.into.length));
        }
      } finally {
        await client.close();
      }
    }
  });
});

Deno.test("NbdClient.blockStatus() returns the agreed contexts' extents; an error reply fails only that request", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: 2 * MIB });
  disk.fill(MIB, pattern(8192, 3));
  disk.markDirty(0, DIRTY_BLOCK);
  await withNbdServer([disk], async (fixture) => {
    const client = await NbdClient.connect(fixture.tcpUri("disk"), {
      metaContexts: [BASE_ALLOCATION, DIRTY_CONTEXT, "no:such-context"],
    });
    try {
      assert.deepEqual([...client.contexts.keys()].sort(), [BASE_ALLOCATION, DIRTY_CONTEXT]);
      const allocation = await client.blockStatus(BASE_ALLOCATION, 0, 2 * MIB);
      assert.deepEqual(allocation, [
        { length: MIB, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
        { length: 8192, flags: 0 },
        { length: MIB - 8192, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
      ]);
      const dirty = await client.blockStatus(DIRTY_CONTEXT, 0, 2 * MIB);
      assert.deepEqual(dirty[0], { length: DIRTY_BLOCK, flags: 1 });
      await assert.rejects(
        client.pread(2 * MIB - 10, new Uint8Array(20)),
        (e) => isServiceError(e) && /error 22/.test(e.message),
      );
      const after = new Uint8Array(8192);
      await client.pread(MIB, after);
      assert.deepEqual(after, pattern(8192, 3));
      await assert.rejects(
        client.blockStatus("no:such-context", 0, 10),
        (e) => isServiceError(e, "NOT_SUPPORTED"),
      );
    } finally {
      await client.close();
    }
    await assert.rejects(
      NbdClient.connect(fixture.tcpUri("missing")),
      (e) => isServiceError(e, "NOT_FOUND"),
    );
  });
});

Deno.test({
  name: "NbdClient reads nbdkit's file plugin: data, holes and base:allocation of a sparse file",
  ignore: toolsMissing("nbdkit"),
  async fn() {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/sparse.img`;
    const socket = `${dir}/nbdkit.sock`;
    const file = await Deno.open(path, { write: true, create: true });
    await file.truncate(8 * MIB);
    await file.seek(3 * MIB, Deno.SeekMode.Start);
    await file.write(pattern(MIB, 9));
    file.close();
    const nbdkit = new Deno.Command("nbdkit", {
      args: ["--foreground", "-U", socket, "-r", "file", path],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      for (let tries = 0; tries < 100; tries++) {
        if (await Deno.stat(socket).then(() => true, () => false)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const client = await NbdClient.connect(`nbd+unix:///?socket=${socket}`, {
        metaContexts: [BASE_ALLOCATION],
      });
      try {
        const whole = new Uint8Array(8 * MIB);
        await client.pread(0, whole.subarray(0, 4 * MIB));
        await client.pread(4 * MIB, whole.subarray(4 * MIB));
        assert.deepEqual(whole, await Deno.readFile(path));
        const extents = await client.blockStatus(BASE_ALLOCATION, 0, 8 * MIB);
        let at = 0;
        const data: number[] = [];
        for (const extent of extents) {
          if (!(extent.flags & NBD_STATE_HOLE)) data.push(at);
          at += extent.length;
        }
        assert.ok(data.includes(3 * MIB), JSON.stringify(extents));
        assert.ok(!data.includes(0), JSON.stringify(extents));
      } finally {
        await client.close();
      }
    } finally {
      nbdkit.kill();
      await nbdkit.output();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
