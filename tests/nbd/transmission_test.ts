import assert from "node:assert/strict";
import { nbdTestWorkers } from "../_helpers/nbd_workers_mode.ts";
import {
  Command as C,
  CommandFlag as F,
  NbdError as E,
  Option,
  Reply,
  ReplyType as RT,
} from "../../src/nbd/constants.ts";
import { DIRTY_CONTEXT, MemoryExport } from "../_helpers/nbd_exports.ts";
import { pattern, waitFor, withNbdServer } from "../_helpers/nbd_fixture.ts";
import {
  goData,
  metaContextData,
  RawNbdClient,
  type ReplyMessage,
} from "../_helpers/nbd_raw_client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

async function session(
  exports: MemoryExport[],
  name: string,
  options: { structured?: boolean; contexts?: string[] },
  body: (client: RawNbdClient, port: number) => Promise<void>,
): Promise<void> {
  await withNbdServer(exports, async (fixture) => {
    const client = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
    try {
      await client.handshake(name, options);
      await body(client, fixture.server.tcpPort!);
    } finally {
      client.close();
    }
  });
}

Deno.test("transmission: simple replies echo 64-bit cookies and carry READ data", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB });
  await session([disk], "disk", {}, async (client) => {
    const data = pattern(8 * KiB, 1);
    await client.request({
      type: C.NBD_CMD_WRITE,
      cookie: 0xfedcba9876543210n,
      offset: 4096,
      data,
    });
    const written = await client.reply();
    assert.deepEqual([written.structured, written.error, written.cookie], [
      false,
      0,
      0xfedcba9876543210n,
    ]);
    await client.request({
      type: C.NBD_CMD_READ,
      cookie: 0xffffffffffffffffn,
      offset: 4096,
      length: data.length,
    });
    const read = await client.reply(new Map([[0xffffffffffffffffn, data.length]]));
    assert.equal(read.error, 0);
    assert.deepEqual(read.payload, data);
  });
});

Deno.test("transmission: refused requests get their error and the connection stays usable", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB });
  const image = new MemoryExport({ name: "image", sizeBytes: MiB, readOnly: true });
  const aligned = new MemoryExport({
    name: "aligned",
    sizeBytes: 4 * MiB,
    blockSize: { minimum: 512, preferred: 4096, maximum: MiB },
  });
  const cases: [string, string, Parameters<RawNbdClient["request"]>[0], number][] = [
    ["write to a read-only export", "image", {
      type: C.NBD_CMD_WRITE,
      cookie: 1n,
      data: new Uint8Array(4096),
    }, E.NBD_EPERM],
    [
      "trim on a read-only export",
      "image",
      { type: C.NBD_CMD_TRIM, cookie: 1n, length: 4096 },
      E.NBD_EPERM,
    ],
    ["read past the end", "disk", {
      type: C.NBD_CMD_READ,
      cookie: 1n,
      offset: MiB - 512,
      length: 1024,
    }, E.NBD_EINVAL],
    ["write past the end", "disk", {
      type: C.NBD_CMD_WRITE,
      cookie: 1n,
      offset: MiB,
      data: new Uint8Array(512),
    }, E.NBD_ENOSPC],
    ["offset beyond 2^53", "disk", {
      type: C.NBD_CMD_READ,
      cookie: 1n,
      offset: 2n ** 60n,
      length: 1,
    }, E.NBD_EINVAL],
    ["unknown command", "disk", { type: 99, cookie: 1n }, E.NBD_EINVAL],
    [
      "NBD_CMD_CACHE (not advertised)",
      "disk",
      { type: C.NBD_CMD_CACHE, cookie: 1n, length: 512 },
      E.NBD_EINVAL,
    ],
    [
      "unknown flag",
      "disk",
      { type: C.NBD_CMD_READ, cookie: 1n, flags: 0x100, length: 512 },
      E.NBD_EINVAL,
    ],
    ["DF without structured replies", "disk", {
      type: C.NBD_CMD_READ,
      cookie: 1n,
      flags: F.NBD_CMD_FLAG_DF,
      length: 512,
    }, E.NBD_EINVAL],
    ["NO_HOLE on a write", "disk", {
      type: C.NBD_CMD_WRITE,
      cookie: 1n,
      flags: F.NBD_CMD_FLAG_NO_HOLE,
      data: new Uint8Array(512),
    }, E.NBD_EINVAL],
    ["FUA on a read-only export", "image", {
      type: C.NBD_CMD_READ,
      cookie: 1n,
      flags: F.NBD_CMD_FLAG_FUA,
      length: 512,
    }, E.NBD_EINVAL],
    [
      "flush with a length",
      "disk",
      { type: C.NBD_CMD_FLUSH, cookie: 1n, length: 512 },
      E.NBD_EINVAL,
    ],
    ["block status without contexts", "disk", {
      type: C.NBD_CMD_BLOCK_STATUS,
      cookie: 1n,
      length: 512,
    }, E.NBD_EINVAL],
    ["read longer than the maximum", "disk", {
      type: C.NBD_CMD_READ,
      cookie: 1n,
      length: 32 * MiB + 1,
    }, E.NBD_EINVAL],
    ["write longer than the maximum", "aligned", {
      type: C.NBD_CMD_WRITE,
      cookie: 1n,
      data: new Uint8Array(2 * MiB),
    }, E.NBD_EINVAL],
    [
      "unaligned read",
      "aligned",
      { type: C.NBD_CMD_READ, cookie: 1n, offset: 100, length: 512 },
      E.NBD_EINVAL,
    ],
  ];
  await withNbdServer([disk, image, aligned], async (fixture) => {
    for (const name of ["disk", "image", "aligned"]) {
      const client = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
      try {
        await client.handshake(name);
        for (const [what, target, request, error] of cases.filter((c) => c[1] === name)) {
          assert.ok(await client.request(request), what);
          const reply = await client.reply();
          assert.equal(reply.error, error, `${what} on ${target}`);
          await client.request({ type: C.NBD_CMD_READ, cookie: 7n, offset: 0, length: 512 });
          const next = await client.reply(new Map([[7n, 512]]));
          assert.deepEqual([next.cookie, next.error, next.payload.length], [7n, 0, 512], what);
        }
      } finally {
        client.close();
      }
    }
  });
  assert.deepEqual(disk.writes, [], "no refused write reached the export");
  assert.deepEqual(image.writes, []);
  assert.deepEqual(aligned.writes, []);
});

Deno.test("transmission: an oversized READ with structured replies gets NBD_EOVERFLOW", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: 64 * MiB });
  await session([disk], "disk", { structured: true }, async (client) => {
    await client.request({ type: C.NBD_CMD_READ, cookie: 3n, length: 32 * MiB + 512 });
    const reply = await client.reply();
    assert.deepEqual([reply.structured, reply.type, reply.error], [
      true,
      RT.NBD_REPLY_TYPE_ERROR,
      E.NBD_EOVERFLOW,
    ]);
    const message = new TextDecoder().decode(reply.payload.subarray(6));
    assert.match(message, /exceeds the maximum/);
  });
});

Deno.test("transmission: a WRITE beyond 64 MiB ends the connection without writing", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB });
  await session([disk], "disk", {}, async (client, port) => {
    await client.request({ type: C.NBD_CMD_WRITE, cookie: 1n, length: 0xfffffff0 });
    await client.send(new Uint8Array(MiB));
    assert.ok(await client.closedByServer());
    const again = await RawNbdClient.connect({ port });
    try {
      assert.equal((await again.handshake("disk")).size, MiB);
    } finally {
      again.close();
    }
  });
  assert.deepEqual(disk.writes, []);
});

Deno.test("transmission: a client vanishing mid-WRITE leaves no half-applied write", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: 4 * MiB });
  await withNbdServer([disk], async (fixture) => {
    const client = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
    await client.handshake("disk");
    await client.request({ type: C.NBD_CMD_WRITE, cookie: 1n, data: pattern(4096, 2) });
    assert.equal((await client.reply()).error, 0);
    await client.request({ type: C.NBD_CMD_WRITE, cookie: 2n, offset: MiB, length: 2 * MiB });
    await client.send(pattern(MiB + 12345, 3));
    client.close();
    await waitFor(() => fixture.server.connections === 0);
    assert.deepEqual(fixture.warnings.filter((w) => /closing/.test(w)).length, 1);
  });
  assert.deepEqual(disk.writes, [{ offset: 0, length: 4096 }]);
  assert.ok(disk.data.subarray(MiB, 3 * MiB).every((b) => b === 0));
});

Deno.test({
  name: "transmission: pipelined requests are answered out of order",
  // A Worker serves its connection's requests one after another (as one nbdkit thread does).
  ignore: nbdTestWorkers() > 0,
}, async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB, readDelayMs: 150 });
  await session([disk], "disk", { structured: true }, async (client) => {
    await client.request({ type: C.NBD_CMD_READ, cookie: 1n, length: 4096 });
    await client.request({
      type: C.NBD_CMD_WRITE,
      cookie: 2n,
      offset: 8192,
      data: pattern(4096, 4),
    });
    await client.request({ type: C.NBD_CMD_FLUSH, cookie: 3n });
    const order: bigint[] = [];
    for (let i = 0; i < 3; i++) order.push((await client.reply()).cookie);
    assert.deepEqual(order, [2n, 3n, 1n]);
    assert.equal(disk.flushes, 1);
  });
});

Deno.test("transmission: structured READ sends holes where the export says zero, one chunk with DF", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB });
  const data = pattern(64 * KiB, 5);
  disk.fill(128 * KiB, data);
  await session([disk], "disk", { structured: true }, async (client) => {
    const chunks = async (cookie: bigint) => {
      const out: ReplyMessage[] = [];
      do out.push(await client.reply()); while ((out.at(-1)!.flags & 1) === 0);
      assert.ok(out.every((c) => c.cookie === cookie));
      return out.map((c) => {
        const view = new DataView(c.payload.buffer);
        const offset = Number(view.getBigUint64(0));
        return c.type === RT.NBD_REPLY_TYPE_OFFSET_HOLE
          ? { hole: true, offset, length: view.getUint32(8) }
          : { hole: false, offset, length: c.payload.length - 8, bytes: c.payload.subarray(8) };
      });
    };
    await client.request({ type: C.NBD_CMD_READ, cookie: 1n, offset: 64 * KiB, length: 256 * KiB });
    const sparse = await chunks(1n);
    assert.deepEqual(sparse.map(({ hole, offset, length }) => ({ hole, offset, length })), [
      { hole: true, offset: 64 * KiB, length: 64 * KiB },
      { hole: false, offset: 128 * KiB, length: 64 * KiB },
      { hole: true, offset: 192 * KiB, length: 128 * KiB },
    ]);
    assert.deepEqual(sparse[1].bytes, data);

    await client.request({
      type: C.NBD_CMD_READ,
      cookie: 2n,
      flags: F.NBD_CMD_FLAG_DF,
      offset: 64 * KiB,
      length: 256 * KiB,
    });
    const whole = await chunks(2n);
    assert.equal(whole.length, 1);
    assert.deepEqual([whole[0].hole, whole[0].offset, whole[0].length], [
      false,
      64 * KiB,
      256 * KiB,
    ]);
    assert.deepEqual(whole[0].bytes, disk.data.subarray(64 * KiB, 320 * KiB));

    await client.request({ type: C.NBD_CMD_READ, cookie: 3n, offset: 0, length: 0 });
    const none = await client.reply();
    assert.deepEqual([none.type, none.flags, none.payload.length], [RT.NBD_REPLY_TYPE_NONE, 1, 0]);
  });
});

Deno.test("transmission: BLOCK_STATUS sends one chunk per context, REQ_ONE one extent each", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB });
  disk.fill(0, new Uint8Array(8192).fill(1));
  disk.markDirty(128 * KiB, 1);
  await session(
    [disk],
    "disk",
    { contexts: ["base:allocation", DIRTY_CONTEXT] },
    async (client) => {
      const status = async (flags: number) => {
        await client.request({
          type: C.NBD_CMD_BLOCK_STATUS,
          cookie: 9n,
          flags,
          offset: 0,
          length: 256 * KiB,
        });
        const chunks = [await client.reply(), await client.reply()];
        assert.deepEqual(chunks.map((c) => c.flags & 1), [0, 1], "DONE on the last chunk only");
        return chunks.map((c) => {
          const view = new DataView(c.payload.buffer);
          const extents: number[][] = [];
          for (let at = 4; at < c.payload.length; at += 8) {
            extents.push([view.getUint32(at), view.getUint32(at + 4)]);
          }
          return { id: view.getUint32(0), extents };
        });
      };
      const [allocation, dirty] = await status(0);
      assert.notEqual(allocation.id, dirty.id);
      assert.deepEqual(allocation.extents, [[8192, 0], [256 * KiB - 8192, 3]]);
      assert.deepEqual(dirty.extents, [[128 * KiB, 0], [64 * KiB, 1], [64 * KiB, 0]]);
      const one = await status(F.NBD_CMD_FLAG_REQ_ONE);
      assert.deepEqual(one.map((c) => c.extents), [[[8192, 0]], [[128 * KiB, 0]]]);
    },
  );
});

Deno.test("transmission: WRITE_ZEROES honours FAST_ZERO and NO_HOLE", async () => {
  const slow = new MemoryExport({ name: "slow", sizeBytes: MiB, fastZero: false });
  slow.fill(0, new Uint8Array(MiB).fill(9));
  await session([slow], "slow", { structured: true }, async (client) => {
    await client.request({
      type: C.NBD_CMD_WRITE_ZEROES,
      cookie: 1n,
      flags: F.NBD_CMD_FLAG_FAST_ZERO,
      length: 64 * KiB,
    });
    assert.equal((await client.reply()).error, E.NBD_ENOTSUP);
    assert.equal(slow.data[0], 9, "a refused fast zero changes nothing");
    await client.request({
      type: C.NBD_CMD_WRITE_ZEROES,
      cookie: 2n,
      flags: F.NBD_CMD_FLAG_NO_HOLE,
      length: 64 * KiB,
    });
    assert.equal((await client.reply()).error, 0);
    assert.ok(slow.data.subarray(0, 64 * KiB).every((b) => b === 0));
    assert.equal(slow.data[64 * KiB], 9);
  });
});

Deno.test("transmission: NBD_CMD_DISC answers the requests in flight before closing", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB, readDelayMs: 100 });
  await session([disk], "disk", {}, async (client) => {
    await client.request({ type: C.NBD_CMD_READ, cookie: 5n, length: 4096 });
    await client.disconnect();
    const reply = await client.reply(new Map([[5n, 4096]]));
    assert.deepEqual([reply.cookie, reply.error], [5n, 0]);
    assert.ok(await client.closedByServer());
  });
});

Deno.test("transmission: meta contexts set for another export are dropped at NBD_OPT_GO", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB });
  const other = new MemoryExport({ name: "other", sizeBytes: MiB });
  await withNbdServer([disk, other], async (fixture) => {
    const client = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
    try {
      await client.greeting();
      await client.clientFlags();
      await client.option(Option.NBD_OPT_STRUCTURED_REPLY);
      await client.optionReplies();
      await client.option(
        Option.NBD_OPT_SET_META_CONTEXT,
        metaContextData("disk", ["base:allocation"]),
      );
      assert.equal((await client.optionReplies()).length, 2, "one context selected, then ACK");
      await client.option(Option.NBD_OPT_GO, goData("other", []));
      assert.equal((await client.optionReplies()).at(-1)!.type, Reply.NBD_REP_ACK);
      await client.request({ type: C.NBD_CMD_BLOCK_STATUS, cookie: 1n, length: 4096 });
      assert.equal((await client.reply()).error, E.NBD_EINVAL);
    } finally {
      client.close();
    }
  });
});

Deno.test("transmission: structured READ of an export that reports no holes never asks for them", async () => {
  class DataOnly extends MemoryExport {
    readonly reportsHoles = false;
    statusCalls = 0;
    override blockStatus(context: string, offset: number, length: number) {
      this.statusCalls += 1;
      return super.blockStatus(context, offset, length);
    }
  }
  const disk = new DataOnly({ name: "disk", sizeBytes: MiB });
  disk.fill(128 * KiB, pattern(64 * KiB, 5));
  await session([disk], "disk", { structured: true }, async (client) => {
    await client.request({ type: C.NBD_CMD_READ, cookie: 1n, offset: 64 * KiB, length: 256 * KiB });
    const reply = await client.reply();
    assert.equal(reply.type, RT.NBD_REPLY_TYPE_OFFSET_DATA);
    assert.equal(reply.payload.length, 8 + 256 * KiB, "one data chunk, zeroes included");
    assert.deepEqual(reply.payload.subarray(8), disk.data.subarray(64 * KiB, 320 * KiB));
    assert.equal(disk.statusCalls, 0);
  });
});
