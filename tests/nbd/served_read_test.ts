/**
 * A READ its export serves at once (what a Worker's pread does) is sent
 * before the transmission loop reads the next request, so its data goes to
 * the socket while it is still in the CPU's cache. The client's requests all
 * arrive in one piece, as a pipelining client's do; the stream records, in
 * order, the export's reads and the bytes written to the socket.
 */

import assert from "node:assert/strict";
import { BufferPool } from "../../src/nbd/buffer_pool.ts";
import { Command as C, NBD_REQUEST_MAGIC } from "../../src/nbd/constants.ts";
import { DEFAULT_BLOCK_SIZE, type Session } from "../../src/nbd/handshake.ts";
import { ReplyWriter } from "../../src/nbd/reply_writer.ts";
import { type ByteStream, SocketReader } from "../../src/nbd/socket_reader.ts";
import { Transmission } from "../../src/nbd/transmission.ts";
import { REQ } from "../../src/nbd/wire.ts";
import { MemoryExport } from "../_helpers/nbd_exports.ts";

const KiB = 1024;
const SIMPLE_REPLY_BYTES = 16;

/** Gives all of `input` to the first read, then ends; writes are taken whole and counted. */
class RecordingStream implements ByteStream {
  sentBytes = 0;
  #input: Uint8Array | undefined;
  constructor(input: Uint8Array) {
    this.#input = input;
  }
  read(into: Uint8Array): Promise<number | null> {
    const input = this.#input;
    if (input === undefined) return Promise.resolve(null);
    assert.ok(into.length >= input.length, "the test's requests fit one read");
    into.set(input);
    this.#input = undefined;
    return Promise.resolve(input.length);
  }
  write(data: Uint8Array): Promise<number> {
    this.sentBytes += data.length;
    return Promise.resolve(data.length);
  }
  close(): void {}
}

function readRequests(count: number, length: number): Uint8Array {
  const bytes = new Uint8Array(count * REQ.size);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < count; i++) {
    const at = i * REQ.size;
    view.setUint32(at + REQ.magic, NBD_REQUEST_MAGIC);
    view.setUint16(at + REQ.type, C.NBD_CMD_READ);
    view.setUint32(at + REQ.cookie + 4, i + 1);
    view.setBigUint64(at + REQ.offset, BigInt(i * length));
    view.setUint32(at + REQ.length, length);
  }
  return bytes;
}

async function serve(
  count: number,
  length: number,
  readDelayMs = 0,
): Promise<{ stream: RecordingStream; sentBeforeRead: number[] }> {
  const disk = new MemoryExport({ name: "disk", sizeBytes: count * length, readDelayMs });
  const stream = new RecordingStream(readRequests(count, length));
  const sentBeforeRead: number[] = [];
  const read = disk.read.bind(disk);
  disk.read = (offset, into) => {
    sentBeforeRead.push(stream.sentBytes);
    return read(offset, into);
  };
  const session: Session = {
    export: disk,
    structured: false,
    contexts: [],
    flags: 0,
    blockSize: DEFAULT_BLOCK_SIZE,
  };
  const pool = new BufferPool();
  const writer = new ReplyWriter(stream, { pool });
  const transmission = new Transmission(session, {
    reader: new SocketReader(stream, 64 * KiB),
    writer,
    pool,
  }, { logger: () => {} });
  await transmission.run();
  return { stream, sentBeforeRead };
}

Deno.test("served READs: each large READ served at once is sent before the next is read", async () => {
  const length = 256 * KiB;
  const { stream, sentBeforeRead } = await serve(8, length);
  assert.equal(stream.sentBytes, 8 * (SIMPLE_REPLY_BYTES + length));
  assert.deepEqual(
    sentBeforeRead,
    [0, 1, 2, 3, 4, 5, 6, 7].map((i) => i * (SIMPLE_REPLY_BYTES + length)),
  );
});

Deno.test("served READs: small READs and READs still under way do not hold the loop", async () => {
  const small = await serve(8, 4 * KiB);
  assert.deepEqual(small.sentBeforeRead, new Array(8).fill(0));
  const slow = await serve(8, 256 * KiB, 5);
  assert.deepEqual(slow.sentBeforeRead, new Array(8).fill(0));
  assert.equal(slow.stream.sentBytes, 8 * (SIMPLE_REPLY_BYTES + 256 * KiB));
});
