/**
 * An NBD session in the transmission phase for protocol checks: the raw
 * client of the handshake and fuzz suites ({@link RawNbdClient}) after
 * structured replies, meta contexts and NBD_OPT_GO, with the replies of a
 * request gathered by kind (data and hole chunks, block status, error).
 *
 * @module
 */

import assert from "node:assert/strict";
import { NBD_REPLY_FLAG_DONE, Option, Reply, ReplyType as R } from "../../src/nbd/constants.ts";
import { decodeNamed, goData, metaContextData, RawNbdClient } from "./nbd_raw_client.ts";

/** A connection in the transmission phase, with the ids of its meta contexts. */
export interface Session {
  /** The raw connection. */
  client: RawNbdClient;
  /** The export's size in bytes. */
  size: number;
  /** Its transmission flags. */
  flags: number;
  /** The negotiated meta contexts by id. */
  contexts: Map<number, string>;
  /** The cookie of the next request. */
  nextCookie: bigint;
  /** Chunks already read of requests not yet awaited, by cookie. */
  pending: Map<bigint, Answer>;
}

/** Opens a session on export `target.name` with structured replies and `options.contexts`. */
export async function open(
  target: { port: number; name: string },
  options: { contexts?: string[] } = {},
): Promise<Session> {
  const client = await RawNbdClient.connect({ port: target.port });
  client.timeoutMs = 60_000;
  await client.greeting();
  await client.clientFlags();
  await client.option(Option.NBD_OPT_STRUCTURED_REPLY);
  assert.equal((await client.optionReplies()).at(-1)!.type, Reply.NBD_REP_ACK);
  const contexts = new Map<number, string>();
  if (options.contexts) {
    await client.option(
      Option.NBD_OPT_SET_META_CONTEXT,
      metaContextData(target.name, options.contexts),
    );
    for (const reply of await client.optionReplies()) {
      if (reply.type !== Reply.NBD_REP_META_CONTEXT) continue;
      const { value, text } = decodeNamed(reply.data);
      contexts.set(value, text);
    }
    assert.deepEqual([...contexts.values()].sort(), [...options.contexts].sort());
  }
  const { size, flags } = await go(client, target.name);
  return { client, size, flags, contexts, nextCookie: 1n, pending: new Map() };
}

/** NBD_OPT_GO on a connection already past its greeting. */
export async function go(
  client: RawNbdClient,
  name: string,
): Promise<{ size: number; flags: number }> {
  await client.option(Option.NBD_OPT_GO, goData(name, []));
  const replies = await client.optionReplies();
  assert.equal(replies.at(-1)!.type, Reply.NBD_REP_ACK, `NBD_OPT_GO ${name}`);
  const info = replies.find((r) => r.type === Reply.NBD_REP_INFO && r.data.length === 12);
  assert.ok(info, "NBD_INFO_EXPORT");
  const view = new DataView(info.data.buffer, info.data.byteOffset);
  return { size: Number(view.getBigUint64(2)), flags: view.getUint16(10) };
}

/** One reply's chunks, by kind: data (offset, bytes), holes (offset, length), an error. */
export interface Answer {
  /** NBD_REPLY_TYPE_OFFSET_DATA chunks. */
  data: { offset: number; bytes: Uint8Array }[];
  /** NBD_REPLY_TYPE_OFFSET_HOLE chunks. */
  holes: { offset: number; length: number }[];
  /** NBD_REPLY_TYPE_BLOCK_STATUS chunks. */
  status: { contextId: number; extents: { length: number; flags: number }[] }[];
  /** The error of an error chunk or simple reply, else 0. */
  error: number;
  /** The last chunk (or the simple reply) arrived. */
  done?: boolean;
}

/** Reads replies until request `cookie` is answered (others' chunks wait in `session.pending`). */
export async function answer(session: Session, cookie: bigint): Promise<Answer> {
  const seen = session.pending;
  while (!seen.get(cookie)?.done) {
    const reply = await session.client.reply();
    const entry = seen.get(reply.cookie) ?? { data: [], holes: [], status: [], error: 0 };
    seen.set(reply.cookie, entry);
    const payload = new DataView(reply.payload.buffer, reply.payload.byteOffset);
    if (!reply.structured) entry.error = reply.error;
    else if (reply.type === R.NBD_REPLY_TYPE_OFFSET_DATA) {
      entry.data.push({
        offset: Number(payload.getBigUint64(0)),
        bytes: reply.payload.subarray(8),
      });
    } else if (reply.type === R.NBD_REPLY_TYPE_OFFSET_HOLE) {
      entry.holes.push({ offset: Number(payload.getBigUint64(0)), length: payload.getUint32(8) });
    } else if (reply.type === R.NBD_REPLY_TYPE_BLOCK_STATUS) {
      const extents = [];
      for (let at = 4; at < reply.payload.length; at += 8) {
        extents.push({ length: payload.getUint32(at), flags: payload.getUint32(at + 4) });
      }
      entry.status.push({ contextId: payload.getUint32(0), extents });
    } else if (reply.type & 0x8000) entry.error = reply.error;
    if (!reply.structured || reply.flags & NBD_REPLY_FLAG_DONE) {
      entry.done = true;
    }
  }
  const done = seen.get(cookie)!;
  seen.delete(cookie);
  return done;
}

/** Sends a request and reads its whole answer. */
export async function call(
  session: Session,
  request: { type: number; flags?: number; offset?: number; length?: number; data?: Uint8Array },
): Promise<Answer> {
  const cookie = session.nextCookie++;
  await session.client.request({ ...request, cookie });
  return await answer(session, cookie);
}

/** The bytes of a structured READ answer, data and holes put together. */
export function assemble(reply: Answer, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let covered = 0;
  for (const chunk of reply.data) {
    out.set(chunk.bytes, chunk.offset - offset);
    covered += chunk.bytes.length;
  }
  for (const hole of reply.holes) covered += hole.length;
  assert.equal(covered, length, "the chunks cover the READ");
  return out;
}

/** Sends NBD_CMD_DISC and checks that the server ends the connection. */
export async function close(session: Session): Promise<void> {
  await session.client.disconnect();
  assert.ok(await session.client.closedByServer(), "the server ends the connection at DISC");
  session.client.close();
}
