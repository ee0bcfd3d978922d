/**
 * The NBD protocol checks of tests/nbd, written against any image export
 * reachable on a loopback port, so the same checks run against the kernel
 * backend's exports: on the fake kernel here (tests/kernel) and on the real
 * module in the lab (tests/e2e). They speak the protocol with the raw
 * client of the handshake and fuzz suites ({@link RawNbdClient}) and the
 * real clients (nbdinfo, nbdcopy), and compare everything with the image's
 * own bytes and the API's changes:
 *
 * - handshake, NBD_OPT_LIST and NBD_OPT_GO/INFO: the export, its size and
 *   flags (read-only unless writable, multi-conn, DF), an unknown name refused;
 * - structured reads (data and hole chunks, one data chunk with DF) equal the image;
 * - block status of `base:allocation` and `qemu:dirty-bitmap:cbt` cover the
 *   image, the dirty extents equal the API's changes;
 * - multi-conn: pipelined reads on four connections at once, and nbdcopy
 *   with four connections, equal the image;
 * - bad requests get their NBD errors and the connection goes on; a bad magic ends it;
 * - a writable image's export takes WRITE (with FUA), WRITE_ZEROES and FLUSH.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  Command as C,
  CommandFlag as F,
  NbdError as E,
  Option,
  Reply,
  TransmissionFlag as TF,
} from "../../src/nbd/constants.ts";
import { goData, RawNbdClient } from "./nbd_raw_client.ts";
import { runToolOk } from "./nbd_fixture.ts";
import { answer, assemble, call, close, open } from "./nbd_session.ts";

/** An image export and what it must show. */
export interface ImageExportTarget {
  /** The NBD server's TCP port on 127.0.0.1. */
  port: number;
  /** The export's name (`<device>@<snapshot-id>`). */
  name: string;
  /** The image's size in bytes. */
  sizeBytes: number;
  /** Whether the snapshot is writable. */
  writable: boolean;
  /** The image's bytes, read from the image itself (the image device). */
  bytes(offset: number, length: number): Promise<Uint8Array>;
  /** The extents the API reports changed since the previous snapshot. */
  dirty: { offset: number; length: number }[];
}

/** Reads spread over the image: start, middle, end, 1 MiB. */
function readPlan(sizeBytes: number): { offset: number; length: number }[] {
  const MiB = 1024 * 1024;
  return [
    { offset: 0, length: 4096 },
    { offset: 512, length: 1000 },
    { offset: Math.floor(sizeBytes / 2), length: 128 * 1024 },
    { offset: 0, length: Math.min(MiB, sizeBytes) },
    { offset: sizeBytes - 4096, length: 4096 },
  ];
}

/** Handshake, NBD_OPT_LIST and NBD_OPT_GO flags of the export; an unknown name refused. */
export async function checkListAndInfo(target: ImageExportTarget): Promise<void> {
  const listed = JSON.parse(
    await runToolOk("nbdinfo", ["--list", "--json", `nbd://127.0.0.1:${target.port}`]),
  ) as {
    exports: Array<{ "export-name": string; "is_read_only": boolean; "export-size": number }>;
  };
  const entry = listed.exports.find((e) => e["export-name"] === target.name);
  assert.ok(entry, `NBD_OPT_LIST shows ${target.name}`);
  assert.equal(entry.is_read_only, !target.writable);
  assert.equal(entry["export-size"], target.sizeBytes);

  const session = await open(target);
  assert.equal(session.size, target.sizeBytes);
  assert.ok(session.flags & TF.NBD_FLAG_HAS_FLAGS);
  assert.equal(Boolean(session.flags & TF.NBD_FLAG_READ_ONLY), !target.writable, "read-only flag");
  assert.ok(session.flags & TF.NBD_FLAG_CAN_MULTI_CONN, "multi-conn");
  assert.ok(session.flags & TF.NBD_FLAG_SEND_DF, "structured replies: DF");
  assert.ok(session.flags & TF.NBD_FLAG_SEND_FLUSH);
  await close(session);

  const stranger = await RawNbdClient.connect({ port: target.port });
  try {
    await stranger.greeting();
    await stranger.clientFlags();
    await stranger.option(Option.NBD_OPT_GO, goData(`${target.name}-nope`, []));
    assert.equal((await stranger.optionReplies()).at(-1)!.type, Reply.NBD_REP_ERR_UNKNOWN);
  } finally {
    stranger.close();
  }
}

/** Structured READs (plain and with DF) equal the image's bytes. */
export async function checkStructuredReads(target: ImageExportTarget): Promise<void> {
  const session = await open(target);
  try {
    for (const { offset, length } of readPlan(target.sizeBytes)) {
      const expected = await target.bytes(offset, length);
      const plain = await call(session, { type: C.NBD_CMD_READ, offset, length });
      assert.equal(plain.error, 0);
      assert.deepEqual(assemble(plain, offset, length), expected, `READ ${offset}+${length}`);
      const whole = await call(session, {
        type: C.NBD_CMD_READ,
        flags: F.NBD_CMD_FLAG_DF,
        offset,
        length,
      });
      assert.equal(whole.data.length, 1, "DF: one data chunk");
      assert.equal(whole.holes.length, 0);
      assert.deepEqual(whole.data[0].bytes, expected, `READ DF ${offset}+${length}`);
    }
  } finally {
    await close(session);
  }
}

/** Block status of base:allocation and qemu:dirty-bitmap:cbt over the whole image. */
export async function checkBlockStatus(target: ImageExportTarget): Promise<void> {
  const session = await open(target, {
    contexts: ["base:allocation", "qemu:dirty-bitmap:cbt"],
  });
  const ids = new Map([...session.contexts].map(([id, name]) => [name, id]));
  const walked = new Map<string, { offset: number; length: number; flags: number }[]>();
  try {
    for (const name of ids.keys()) walked.set(name, []);
    const ends = new Map([...ids.keys()].map((name) => [name, 0]));
    while ([...ends.values()].some((end) => end < target.sizeBytes)) {
      const offset = Math.min(...ends.values());
      const reply = await call(session, {
        type: C.NBD_CMD_BLOCK_STATUS,
        offset,
        length: target.sizeBytes - offset,
      });
      assert.equal(reply.error, 0);
      assert.equal(reply.status.length, 2, "one block status chunk per context");
      for (const { contextId, extents } of reply.status) {
        const name = session.contexts.get(contextId)!;
        let at = offset;
        for (const extent of extents) {
          walked.get(name)!.push({ offset: at, ...extent });
          at += extent.length;
        }
        ends.set(name, Math.max(ends.get(name)!, at));
        assert.ok(at > offset, `${name} answers at least one extent`);
      }
      // Only contexts that stopped at the lowest end move the next request on.
      for (const [name, end] of ends) if (end < offset) ends.set(name, offset);
    }
  } finally {
    await close(session);
  }
  const coverage = (name: string) => {
    const extents = walked.get(name)!.filter((e) => e.offset < target.sizeBytes);
    return extents.reduce((sum, e) => sum + Math.min(e.length, target.sizeBytes - e.offset), 0);
  };
  assert.ok(coverage("base:allocation") >= target.sizeBytes, "base:allocation covers the image");
  const dirty = merge(
    walked.get("qemu:dirty-bitmap:cbt")!.filter((e) => e.flags & 1).map(({ offset, length }) => ({
      offset,
      length: Math.min(length, target.sizeBytes - offset),
    })),
  );
  assert.deepEqual(dirty, merge(target.dirty), "qemu:dirty-bitmap:cbt equals the API's changes");
}

function merge(
  extents: { offset: number; length: number }[],
): { offset: number; length: number }[] {
  const sorted = [...extents].sort((a, b) => a.offset - b.offset);
  const out: { offset: number; length: number }[] = [];
  for (const extent of sorted) {
    const last = out.at(-1);
    if (last && last.offset + last.length === extent.offset) last.length += extent.length;
    else out.push({ ...extent });
  }
  return out;
}

/** Pipelined reads on four connections at once, and nbdcopy --connections=4, equal the image. */
export async function checkMultiConn(target: ImageExportTarget, scratchDir: string): Promise<void> {
  const sessions = await Promise.all([0, 1, 2, 3].map(() => open(target)));
  try {
    const step = Math.max(4096, Math.floor(target.sizeBytes / 64 / 4096) * 4096);
    await Promise.all(sessions.map(async (session, index) => {
      const plan = Array.from({ length: 8 }, (_, i) => ({
        offset: ((index * 8 + i) * step) % (target.sizeBytes - 65536),
        length: 65536,
        cookie: session.nextCookie++,
      }));
      for (const read of plan) {
        await session.client.request({ type: C.NBD_CMD_READ, ...read });
      }
      for (const read of [...plan].reverse()) {
        const reply = await answer(session, read.cookie);
        assert.equal(reply.error, 0);
        assert.deepEqual(
          assemble(reply, read.offset, read.length),
          await target.bytes(read.offset, read.length),
          `pipelined READ ${read.offset} on connection ${index}`,
        );
      }
    }));
  } finally {
    await Promise.all(sessions.map(close));
  }
  const copy = `${scratchDir}/nbdcopy-${crypto.randomUUID()}.raw`;
  try {
    await runToolOk("nbdcopy", [
      "--connections=4",
      `nbd://127.0.0.1:${target.port}/${target.name}`,
      copy,
    ]);
    const copied = await Deno.readFile(copy);
    assert.equal(copied.length, target.sizeBytes);
    assert.ok(
      (await target.bytes(0, target.sizeBytes)).every((b, i) => b === copied[i]),
      "nbdcopy with four connections equals the image",
    );
  } finally {
    await Deno.remove(copy).catch(() => {});
  }
}

/** Bad requests get their NBD errors and the connection goes on; a bad magic ends it. */
export async function checkBadRequests(target: ImageExportTarget): Promise<void> {
  const session = await open(target, { contexts: ["base:allocation"] });
  const size = target.sizeBytes;
  try {
    const refused = async (
      request: {
        type: number;
        flags?: number;
        offset?: number;
        length?: number;
        data?: Uint8Array;
      },
      error: number,
      what: string,
    ) => assert.equal((await call(session, request)).error, error, what);
    await refused(
      { type: C.NBD_CMD_READ, offset: size, length: 512 },
      E.NBD_EINVAL,
      "past the end",
    );
    await refused(
      { type: C.NBD_CMD_READ, offset: size - 512, length: 1024 },
      E.NBD_EINVAL,
      "across the end",
    );
    if (size > 33 * 1024 * 1024) {
      // Within the image but over the 32 MiB maximum payload (smaller images: past the end).
      await refused(
        { type: C.NBD_CMD_READ, length: 33 * 1024 * 1024 },
        E.NBD_EOVERFLOW,
        "over the maximum",
      );
    }
    await refused(
      { type: C.NBD_CMD_READ, flags: F.NBD_CMD_FLAG_REQ_ONE, length: 512 },
      E.NBD_EINVAL,
      "a flag READ does not take",
    );
    await refused({ type: 99, length: 512 }, E.NBD_EINVAL, "an unknown command");
    if (!target.writable) {
      await refused(
        { type: C.NBD_CMD_WRITE, length: 512, data: new Uint8Array(512) },
        E.NBD_EPERM,
        "WRITE to a read-only image",
      );
      await refused(
        { type: C.NBD_CMD_WRITE_ZEROES, length: 4096 },
        E.NBD_EPERM,
        "WRITE_ZEROES to a read-only image",
      );
    } else {
      await refused(
        { type: C.NBD_CMD_WRITE, offset: size - 256, length: 512, data: new Uint8Array(512) },
        E.NBD_ENOSPC,
        "WRITE past the end",
      );
    }
    const still = await call(session, { type: C.NBD_CMD_READ, offset: 0, length: 4096 });
    assert.equal(still.error, 0, "the connection goes on after every refusal");
    assert.deepEqual(assemble(still, 0, 4096), await target.bytes(0, 4096));
    await session.client.request({ type: C.NBD_CMD_READ, cookie: 7n, length: 512, magic: 1 });
    assert.ok(await session.client.closedByServer(), "a bad request magic ends the connection");
  } finally {
    session.client.close();
  }
}

/**
 * A writable image's export takes WRITE (plain and FUA), WRITE_ZEROES and
 * FLUSH; reads over NBD and of the image itself show them. Writes 192 KiB
 * from `offset`.
 */
export async function checkWrites(target: ImageExportTarget, offset: number): Promise<void> {
  assert.ok(target.writable, "checkWrites needs a writable snapshot");
  const session = await open(target);
  const block = 65536;
  const data = Uint8Array.from({ length: block }, (_, i) => (i * 31 + 7) & 0xff);
  try {
    assert.equal((await call(session, { type: C.NBD_CMD_WRITE, offset, data })).error, 0);
    assert.equal(
      (await call(session, {
        type: C.NBD_CMD_WRITE,
        flags: F.NBD_CMD_FLAG_FUA,
        offset: offset + block,
        data: data.map((b) => b ^ 0xff),
      })).error,
      0,
    );
    assert.equal(
      (await call(session, {
        type: C.NBD_CMD_WRITE_ZEROES,
        offset: offset + 2 * block,
        length: block,
      })).error,
      0,
    );
    assert.equal((await call(session, { type: C.NBD_CMD_FLUSH })).error, 0);
    const expected = new Uint8Array(3 * block);
    expected.set(data);
    expected.set(data.map((b) => b ^ 0xff), block);
    const back = await call(session, { type: C.NBD_CMD_READ, offset, length: 3 * block });
    assert.equal(back.error, 0);
    assert.deepEqual(assemble(back, offset, 3 * block), expected, "read back over NBD");
    assert.deepEqual(await target.bytes(offset, 3 * block), expected, "the image shows the writes");
  } finally {
    await close(session);
  }
}
