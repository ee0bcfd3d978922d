/**
 * SocketReader and ReplyWriter against a scripted stream that delivers and
 * accepts data in small, irregular pieces (what a loaded socket does and a
 * loopback test rarely shows).
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { BufferPool } from "../../src/nbd/buffer_pool.ts";
import { ReplyWriter } from "../../src/nbd/reply_writer.ts";
import { type ByteStream, SocketReader } from "../../src/nbd/socket_reader.ts";
import { pattern } from "../_helpers/nbd_fixture.ts";

/**
 * Serves `input` in pieces of 1..`piece` bytes; records writes, accepting
 * 1000..`piece`*1000 bytes each (everything when `piece` is Infinity).
 */
class ChoppyStream implements ByteStream {
  written: number[] = [];
  writes = 0;
  #input: Uint8Array;
  #at = 0;
  #step = 0;
  constructor(input: Uint8Array, readonly piece: number, readonly failAfter = Infinity) {
    this.#input = input;
  }
  #size(): number {
    this.#step = (this.#step * 7 + 3) % this.piece;
    return 1 + this.#step;
  }
  async read(into: Uint8Array): Promise<number | null> {
    await Promise.resolve();
    if (this.#at >= this.#input.length) return null;
    const n = Math.min(into.length, this.#size(), this.#input.length - this.#at);
    into.set(this.#input.subarray(this.#at, this.#at + n));
    this.#at += n;
    return n;
  }
  async write(data: Uint8Array): Promise<number> {
    await Promise.resolve();
    if (++this.writes > this.failAfter) throw new Deno.errors.BrokenPipe("peer gone");
    const n = this.piece === Infinity ? data.length : Math.min(data.length, this.#size() * 1000);
    for (let i = 0; i < n; i++) this.written.push(data[i]);
    return n;
  }
  close(): void {}
}

Deno.test("SocketReader assembles messages from irregular pieces", async () => {
  const input = pattern(300_000, 1);
  const reader = new SocketReader(new ChoppyStream(input, 97), 4096);
  assert.ok(await reader.fill(28));
  assert.deepEqual(reader.bytes.subarray(reader.take(28), 28), input.subarray(0, 28));
  const big = new Uint8Array(200_000);
  await reader.readInto(big);
  assert.deepEqual(big, input.subarray(28, 200_028));
  await reader.discard(99_000);
  const tail = new Uint8Array(972);
  await reader.readInto(tail);
  assert.deepEqual(tail, input.subarray(299_028));
  assert.equal(await reader.fill(1), false, "a clean end between messages");
});

/** Gives everything asked of `input` at once, recording each read's size and midMessage flag. */
class RecordingStream implements ByteStream {
  reads: { size: number; midMessage: boolean }[] = [];
  #at = 0;
  constructor(readonly input: Uint8Array) {}
  read(into: Uint8Array, midMessage = false): Promise<number | null> {
    this.reads.push({ size: into.length, midMessage });
    if (this.#at >= this.input.length) return Promise.resolve(null);
    const n = Math.min(into.length, this.input.length - this.#at);
    into.set(this.input.subarray(this.#at, this.#at + n));
    this.#at += n;
    return Promise.resolve(n);
  }
  write(data: Uint8Array): Promise<number> {
    return Promise.resolve(data.length);
  }
  close(): void {}
}

Deno.test("SocketReader reads 16 KiB ahead of a header, so a large WRITE payload mostly skips the buffer", async () => {
  // A 28-byte header, a 256 KiB payload, and the next header, all waiting in the socket.
  const input = pattern(28 + 262_144 + 28, 5);
  const stream = new RecordingStream(input);
  const reader = new SocketReader(stream);
  assert.ok(await reader.fill(28));
  assert.deepEqual(stream.reads, [{ size: 16_384, midMessage: false }]);
  reader.take(28);
  const payload = new Uint8Array(262_144);
  await reader.readInto(payload);
  assert.deepEqual(payload, input.subarray(28, 262_172));
  // The rest of the payload came straight into it, and was marked as the rest of a message.
  assert.deepEqual(stream.reads.slice(1), [{ size: 262_144 - (16_384 - 28), midMessage: true }]);
  assert.ok(await reader.fill(28));
  assert.deepEqual(stream.reads.at(-1), { size: 16_384, midMessage: false });
});

Deno.test("SocketReader marks the reads that complete a header begun in the buffer as the rest of a message", async () => {
  const stream = new ChoppyStream(pattern(28, 6), 10);
  const flags: boolean[] = [];
  const read = stream.read.bind(stream);
  stream.read = (into: Uint8Array, midMessage?: boolean) => {
    flags.push(midMessage ?? false);
    return read(into);
  };
  const reader = new SocketReader(stream);
  assert.ok(await reader.fill(28));
  assert.ok(flags.length > 1, "the header came in pieces");
  assert.deepEqual(flags, [false, ...flags.slice(1).map(() => true)]);
});

Deno.test("SocketReader reports a stream that ends inside a message", async () => {
  const reader = new SocketReader(new ChoppyStream(pattern(40, 2), 7));
  await assert.rejects(reader.fill(64), (e) => isServiceError(e, "INVALID_ARGUMENT"));
  const short = new SocketReader(new ChoppyStream(pattern(100_000, 3), 50));
  await assert.rejects(
    short.readInto(new Uint8Array(100_001)),
    (e) => isServiceError(e, "INVALID_ARGUMENT"),
  );
});

Deno.test("ReplyWriter keeps reserved, copied and queued replies in order across partial writes", async () => {
  const stream = new ChoppyStream(new Uint8Array(0), 13);
  const writer = new ReplyWriter(stream);
  const expected: number[] = [];
  for (let i = 0; i < 200; i++) {
    const size = i % 3 === 0 ? 40_000 + i : i % 3 === 1 ? 16 : 3000;
    const data = pattern(size, i);
    if (size === 16) {
      const at = writer.reserve(16);
      writer.bytes.set(data, at);
    } else writer.send(data);
    expected.push(...data);
    if (i % 17 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await writer.drained();
  assert.equal(writer.queuedBytes, 0);
  assert.equal(stream.written.length, expected.length);
  assert.ok(stream.written.every((b, i) => b === expected[i]));
});

Deno.test("ReplyWriter batches the replies produced in one turn into one socket write", async () => {
  const stream = new ChoppyStream(new Uint8Array(0), Infinity);
  const writer = new ReplyWriter(stream);
  for (let i = 0; i < 100; i++) writer.view.setUint32(writer.reserve(16), i);
  writer.send(pattern(4000, 1));
  await writer.drained();
  assert.equal(stream.writes, 1);
  assert.equal(stream.written.length, 1600 + 4000);
});

Deno.test("ReplyWriter reports a broken socket once and drops later replies", async () => {
  const failures: unknown[] = [];
  const writer = new ReplyWriter(new ChoppyStream(new Uint8Array(0), 5, 2), {
    onFailure: (e) => failures.push(e),
  });
  for (let i = 0; i < 10; i++) writer.send(pattern(50_000, i));
  await writer.drained();
  assert.equal(failures.length, 1);
  assert.ok(writer.failure instanceof Deno.errors.BrokenPipe);
  writer.send(pattern(10, 1));
  await writer.drained();
  assert.equal(writer.queuedBytes, 0);
});

Deno.test("ReplyWriter returns recycled buffers to the pool once copied or written", async () => {
  const pool = new BufferPool();
  const stream = new ChoppyStream(new Uint8Array(0), 7);
  const writer = new ReplyWriter(stream, { pool });
  const small = pool.take(4096 + 32);
  const large = pool.take(256 * 1024 + 32);
  large.set(pattern(256 * 1024, 9), 32);
  writer.send(small.subarray(16), small);
  assert.equal(pool.pooledBytes, 4096 + 32, "a copied buffer is free at once");
  writer.send(large.subarray(32), large);
  assert.equal(pool.pooledBytes, 4096 + 32, "a queued buffer is not free before it is written");
  await writer.drained();
  assert.equal(pool.pooledBytes, 4096 + 32 + 256 * 1024 + 32);
  assert.equal(pool.take(256 * 1024 + 32), large, "the same buffer is handed out again");
  assert.deepEqual(stream.written.slice(4096 + 16), [...pattern(256 * 1024, 9)]);
});
