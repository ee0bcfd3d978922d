import assert from "node:assert/strict";
import {
  Info,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  Option,
  Reply,
  TransmissionFlag as TF,
} from "../../src/nbd/constants.ts";
import { DIRTY_CONTEXT, MemoryExport } from "../_helpers/nbd_exports.ts";
import { type NbdFixture, withNbdServer } from "../_helpers/nbd_fixture.ts";
import { decodeNamed, goData, metaContextData, RawNbdClient } from "../_helpers/nbd_raw_client.ts";

const MiB = 1024 * 1024;

function exports(): MemoryExport[] {
  return [
    new MemoryExport({ name: "disk", sizeBytes: MiB, description: "the disk" }),
    new MemoryExport({ name: "image", sizeBytes: 2 * MiB, readOnly: true }),
  ];
}

async function withClient(
  body: (client: RawNbdClient, fixture: NbdFixture) => Promise<void>,
): Promise<void> {
  await withNbdServer(exports(), async (fixture) => {
    const client = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
    try {
      await body(client, fixture);
    } finally {
      client.close();
    }
  });
}

async function opened(client: RawNbdClient): Promise<void> {
  assert.equal(await client.greeting(), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  await client.clientFlags();
}

Deno.test("handshake: greeting advertises fixed newstyle and no zeroes", async () => {
  await withClient(async (client) => {
    await opened(client);
    await client.option(Option.NBD_OPT_ABORT);
    const [reply] = await client.optionReplies();
    assert.equal(reply.type, Reply.NBD_REP_ACK);
    assert.equal(reply.option, Option.NBD_OPT_ABORT);
    assert.ok(await client.closedByServer());
  });
});

Deno.test("handshake: NBD_OPT_LIST lists every export with its description", async () => {
  await withClient(async (client) => {
    await opened(client);
    await client.option(Option.NBD_OPT_LIST);
    const replies = await client.optionReplies();
    assert.equal(replies.at(-1)!.type, Reply.NBD_REP_ACK);
    const servers = replies.filter((r) => r.type === Reply.NBD_REP_SERVER).map((r) => {
      const { value, text } = decodeNamed(r.data);
      return { name: text.slice(0, value), description: text.slice(value) };
    });
    assert.deepEqual(servers, [
      { name: "disk", description: "the disk" },
      { name: "image", description: "" },
    ]);
    await client.option(Option.NBD_OPT_LIST, new Uint8Array(3));
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_INVALID);
  });
});

Deno.test("handshake: NBD_OPT_INFO gives size, flags, block size, name and description", async () => {
  await withClient(async (client) => {
    await opened(client);
    await client.option(
      Option.NBD_OPT_INFO,
      goData("", [Info.NBD_INFO_NAME, Info.NBD_INFO_DESCRIPTION, Info.NBD_INFO_BLOCK_SIZE]),
    );
    const replies = await client.optionReplies();
    assert.equal(replies.at(-1)!.type, Reply.NBD_REP_ACK);
    const infos = new Map(
      replies.slice(0, -1).map((r) => {
        const view = new DataView(r.data.buffer);
        return [view.getUint16(0), r.data] as const;
      }),
    );
    const exportInfo = new DataView(infos.get(Info.NBD_INFO_EXPORT)!.buffer);
    assert.equal(exportInfo.getBigUint64(2), BigInt(MiB));
    const flags = exportInfo.getUint16(10);
    assert.equal(flags & TF.NBD_FLAG_READ_ONLY, 0);
    assert.ok(flags & TF.NBD_FLAG_SEND_TRIM && flags & TF.NBD_FLAG_SEND_FAST_ZERO);
    assert.equal(flags & TF.NBD_FLAG_SEND_DF, 0, "no DF without structured replies");
    const decoder = new TextDecoder();
    assert.equal(decoder.decode(infos.get(Info.NBD_INFO_NAME)!.subarray(2)), "disk");
    assert.equal(decoder.decode(infos.get(Info.NBD_INFO_DESCRIPTION)!.subarray(2)), "the disk");
    const sizes = new DataView(infos.get(Info.NBD_INFO_BLOCK_SIZE)!.buffer);
    assert.deepEqual([sizes.getUint32(2), sizes.getUint32(6), sizes.getUint32(10)], [
      1,
      4096,
      32 * MiB,
    ]);
    // INFO does not end negotiation: an unknown export is refused and the session goes on.
    await client.option(Option.NBD_OPT_INFO, goData("nope", []));
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_UNKNOWN);
    await client.option(Option.NBD_OPT_GO, new Uint8Array([0, 0, 0, 9, 1]));
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_INVALID);
  });
});

Deno.test("handshake: read-only export advertises READ_ONLY and no write features", async () => {
  await withClient(async (client) => {
    const { flags, size } = await client.handshake("image", { structured: true });
    assert.equal(size, 2 * MiB);
    assert.ok(flags & TF.NBD_FLAG_READ_ONLY);
    assert.ok(flags & TF.NBD_FLAG_SEND_DF);
    assert.ok(flags & TF.NBD_FLAG_CAN_MULTI_CONN);
    for (const f of [TF.NBD_FLAG_SEND_FUA, TF.NBD_FLAG_SEND_TRIM, TF.NBD_FLAG_SEND_WRITE_ZEROES]) {
      assert.equal(flags & f, 0);
    }
  });
});

Deno.test("handshake: unknown options get NBD_REP_ERR_UNSUP and negotiation continues", async () => {
  await withClient(async (client) => {
    await opened(client);
    for (const option of [Option.NBD_OPT_STARTTLS, Option.NBD_OPT_EXTENDED_HEADERS, 4242]) {
      await client.option(option, new Uint8Array(5));
      const reply = await client.optionReply();
      assert.equal(reply.type, Reply.NBD_REP_ERR_UNSUP);
      assert.equal(reply.option, option);
    }
    await client.option(Option.NBD_OPT_STRUCTURED_REPLY);
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ACK);
    await client.option(Option.NBD_OPT_STRUCTURED_REPLY);
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_INVALID);
  });
});

Deno.test("handshake: an oversized option is skipped unread, refused, and the session goes on", async () => {
  await withClient(async (client) => {
    await opened(client);
    await client.option(4242, new Uint8Array(1024 * 1024));
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_TOO_BIG);
    await client.option(Option.NBD_OPT_LIST);
    assert.equal((await client.optionReplies()).at(-1)!.type, Reply.NBD_REP_ACK);
  });
});

Deno.test("handshake: meta context queries list by prefix and select exact names", async () => {
  await withClient(async (client) => {
    await opened(client);
    const list = async (queries: string[]) => {
      await client.option(Option.NBD_OPT_LIST_META_CONTEXT, metaContextData("disk", queries));
      const replies = await client.optionReplies();
      assert.equal(replies.at(-1)!.type, Reply.NBD_REP_ACK);
      return replies.slice(0, -1).map((r) => decodeNamed(r.data).text);
    };
    assert.deepEqual(await list([]), ["base:allocation", DIRTY_CONTEXT]);
    assert.deepEqual(await list(["base:"]), ["base:allocation"]);
    assert.deepEqual(await list(["qemu:dirty-bitmap:"]), [DIRTY_CONTEXT]);
    assert.deepEqual(await list(["qemu:"]), [DIRTY_CONTEXT]);
    assert.deepEqual(await list(["nope:", "base:nothing", "nocolon"]), []);

    const set = metaContextData("disk", ["qemu:dirty-bitmap:", DIRTY_CONTEXT, "base:allocation"]);
    await client.option(Option.NBD_OPT_SET_META_CONTEXT, set);
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_INVALID, "needs structured");
    await client.option(Option.NBD_OPT_STRUCTURED_REPLY);
    await client.optionReplies();
    await client.option(Option.NBD_OPT_SET_META_CONTEXT, set);
    const replies = await client.optionReplies();
    assert.equal(replies.at(-1)!.type, Reply.NBD_REP_ACK);
    const selected = replies.slice(0, -1).map((r) => decodeNamed(r.data));
    assert.deepEqual(selected.map((s) => s.text), [DIRTY_CONTEXT, "base:allocation"]);
    assert.equal(new Set(selected.map((s) => s.value)).size, 2, "unique ids");

    await client.option(Option.NBD_OPT_SET_META_CONTEXT, metaContextData("nope", ["base:"]));
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_UNKNOWN);
    const truncated = metaContextData("disk", ["base:allocation"]).subarray(0, 14);
    await client.option(Option.NBD_OPT_LIST_META_CONTEXT, truncated);
    assert.equal((await client.optionReply()).type, Reply.NBD_REP_ERR_INVALID);
  });
});

Deno.test("handshake: NBD_OPT_EXPORT_NAME sends size, flags and the 124 zeroes unless NO_ZEROES", async () => {
  for (const noZeroes of [false, true]) {
    await withClient(async (client) => {
      await client.greeting();
      await client.clientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? 2 : 0));
      await client.option(Option.NBD_OPT_EXPORT_NAME, new TextEncoder().encode("image"));
      const reply = await client.read(10 + (noZeroes ? 0 : 124));
      const view = new DataView(reply.buffer);
      assert.equal(view.getBigUint64(0), BigInt(2 * MiB));
      assert.ok(view.getUint16(8) & TF.NBD_FLAG_READ_ONLY);
      assert.ok(reply.subarray(10).every((b) => b === 0));
      await client.disconnect();
      assert.ok(await client.closedByServer());
    });
  }
});

Deno.test("handshake: protocol violations end only that connection", async (t) => {
  const cases: [string, (client: RawNbdClient) => Promise<void>][] = [
    ["unknown client flags", async (c) => {
      await c.greeting();
      await c.clientFlags(0x80);
    }],
    ["bad option magic", async (c) => {
      await opened(c);
      await c.send(new Uint8Array(16).fill(0x41));
    }],
    ["NBD_OPT_EXPORT_NAME of an unknown export", async (c) => {
      await opened(c);
      await c.option(Option.NBD_OPT_EXPORT_NAME, new TextEncoder().encode("nope"));
    }],
    ["an option longer than 64 MiB", async (c) => {
      await opened(c);
      const header = new Uint8Array(16);
      const view = new DataView(header.buffer);
      view.setBigUint64(0, 0x49484156454f5054n);
      view.setUint32(8, 4242);
      view.setUint32(12, 0xffffffff);
      await c.send(header);
    }],
  ];
  await withNbdServer(exports(), async (fixture) => {
    for (const [name, script] of cases) {
      await t.step(name, async () => {
        const bad = await RawNbdClient.connect({ path: fixture.server.unixPath! });
        try {
          await script(bad);
          assert.ok(await bad.closedByServer(), "the server closes the connection");
        } finally {
          bad.close();
        }
      });
    }
    await t.step("a truncated handshake, then the server still serves", async () => {
      const quitter = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
      await quitter.greeting();
      await quitter.send(new Uint8Array([0, 0]));
      quitter.close();
      const good = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
      try {
        assert.equal((await good.handshake("disk")).size, MiB);
      } finally {
        good.close();
      }
    });
  });
});

Deno.test("handshake: descriptions longer than the protocol's 4096-byte limit are cut", async () => {
  const long = new MemoryExport({ name: "long", sizeBytes: 4096, description: "é".repeat(3000) });
  await withNbdServer([long], async (fixture) => {
    const client = await RawNbdClient.connect({ port: fixture.server.tcpPort! });
    try {
      await opened(client);
      await client.option(Option.NBD_OPT_LIST);
      const [server] = await client.optionReplies();
      const { value, text } = decodeNamed(server.data);
      assert.equal(text.slice(0, value), "long");
      assert.equal(server.data.length - 4 - value, 4096);
      assert.equal(text.slice(value), "é".repeat(2048));
    } finally {
      client.close();
    }
  });
});
