/**
 * Zero-copy READs of the Worker plane on real descriptors: a real file
 * spliced into pipes (src/nbd/worker/read_pipes.ts) and from them to a real
 * TCP socket (BlockingStream.spliceFrom), read back by a Deno client.
 */

import assert from "node:assert/strict";
import { BlockingStream } from "../../src/nbd/worker/blocking_stream.ts";
import { cString, libc, Sys } from "../../src/nbd/worker/libc.ts";
import { listenTcp } from "../../src/nbd/worker/listen_socket.ts";
import { ReadPipes } from "../../src/nbd/worker/read_pipes.ts";
import type { PipedData } from "../../src/nbd/export.ts";
import { Prng, randomSeed } from "../_helpers/prng.ts";

const KiB = 1024;
const FILE_BYTES = 1024 * KiB;

/** A file of random bytes, opened read-write through libc; its bytes and descriptor. */
async function randomFile(dir: string) {
  const bytes = new Prng(randomSeed()).bytes(FILE_BYTES);
  const path = `${dir}/file.img`;
  await Deno.writeFile(path, bytes);
  const fd = libc().open(cString(path), Sys.O_RDWR | Sys.O_CLOEXEC, 0);
  assert.ok(fd >= 0);
  return { bytes, fd };
}

/** A connected pair: a BlockingStream over the accepted socket and a Deno client. */
async function connectedPair(idleTimeoutMs = 60_000) {
  const listener = listenTcp("127.0.0.1", 0);
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.port! });
  const fd = libc().accept4(listener.fd, null, null, Sys.SOCK_CLOEXEC | Sys.SOCK_NONBLOCK);
  libc().close(listener.fd);
  assert.ok(fd >= 0);
  const wakeFd = libc().eventfd(0, Sys.EFD_NONBLOCK | Sys.EFD_CLOEXEC);
  const messageFd = libc().eventfd(0, Sys.EFD_NONBLOCK | Sys.EFD_CLOEXEC);
  const stream = new BlockingStream(fd, {
    wakeFd,
    messageFd,
    idleTimeoutMs,
    saturated: () => true,
  });
  return {
    stream,
    client,
    close() {
      client.close();
      for (const each of [fd, wakeFd, messageFd]) libc().close(each);
    },
  };
}

async function readExactly(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const into = new Uint8Array(length);
  for (let done = 0; done < length;) {
    const n = await conn.read(into.subarray(done));
    assert.ok(n !== null, "the stream ended early");
    done += n;
  }
  return into;
}

async function splice(stream: BlockingStream, piped: PipedData): Promise<void> {
  let done = 0;
  try {
    while (done < piped.length) done += await stream.spliceFrom!(piped.fd, piped.length - done);
  } finally {
    piped.release(done === piped.length);
  }
}

Deno.test("read pipes: spliced file bytes reach the socket byte for byte, and a drained pipe is reused", async () => {
  const dir = await Deno.makeTempDir();
  const file = await randomFile(dir);
  const pair = await connectedPair();
  const pipes = new ReadPipes();
  try {
    let firstPipe: number | undefined;
    for (
      const [offset, length] of [[4096, 256 * KiB], [777, 40 * KiB], [
        FILE_BYTES - 256 * KiB,
        256 * KiB,
      ]]
    ) {
      const piped = pipes.fill(file.fd, offset, length);
      assert.ok(piped !== undefined, "a pipe takes a 256 KiB read");
      assert.equal(piped.length, length);
      firstPipe ??= piped.fd;
      assert.equal(piped.fd, firstPipe, "the drained pipe comes back");
      const [received] = await Promise.all([
        readExactly(pair.client, length),
        splice(pair.stream, piped),
      ]);
      assert.deepEqual(received, file.bytes.subarray(offset, offset + length));
    }
  } finally {
    pipes.close();
    pair.close();
    libc().close(file.fd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("read pipes: a read past the end fails with EIO before anything is sent, and the pipe is closed", async () => {
  const dir = await Deno.makeTempDir();
  const file = await randomFile(dir);
  const pipes = new ReadPipes();
  try {
    assert.throws(
      () => pipes.fill(file.fd, FILE_BYTES - 4096, 64 * KiB),
      (error: { errno?: number }) => error.errno === 5,
    );
    const after = pipes.fill(file.fd, 0, 64 * KiB);
    assert.ok(after !== undefined, "a new pipe after the failed one");
    after.release(true);
  } finally {
    pipes.close();
    libc().close(file.fd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("read pipes: a read larger than a pipe, or with every pipe waiting for the socket, goes the pread way", async () => {
  const dir = await Deno.makeTempDir();
  const file = await randomFile(dir);
  const pipes = new ReadPipes();
  const held: PipedData[] = [];
  try {
    assert.equal(pipes.fill(file.fd, 0, 1024 * KiB), undefined, "1 MiB is more than a pipe holds");
    for (;;) {
      const piped = pipes.fill(file.fd, 0, 4 * KiB);
      if (piped === undefined) break;
      held.push(piped);
      assert.ok(held.length <= 64, "the pipes of a Worker are bounded");
    }
    assert.equal(held.length, 64);
    held.pop()!.release(false);
    const again = pipes.fill(file.fd, 0, 4 * KiB);
    assert.ok(again !== undefined, "a pipe closed undrained makes room for a new one");
    held.push(again);
  } finally {
    for (const piped of held) piped.release(false);
    pipes.close();
    libc().close(file.fd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("read pipes: a client that stops reading fails the splice with TIMEOUT, not a stuck Worker", async () => {
  const dir = await Deno.makeTempDir();
  const file = await randomFile(dir);
  const pair = await connectedPair(300);
  const pipes = new ReadPipes();
  try {
    let failure: unknown;
    for (let sent = 0; failure === undefined; sent++) {
      assert.ok(sent < 4096, "the socket never filled up");
      const piped = pipes.fill(file.fd, 0, 256 * KiB)!;
      await splice(pair.stream, piped).catch((error) => failure = error);
    }
    assert.equal((failure as { code?: string }).code, "TIMEOUT");
    assert.match(String(failure), /stopped reading/);
  } finally {
    pipes.close();
    pair.close();
    libc().close(file.fd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("read pipes: a stream told not to splice (a peer on this host) offers no spliceFrom, so READs go the pread way", () => {
  const wakeFd = libc().eventfd(0, Sys.EFD_NONBLOCK | Sys.EFD_CLOEXEC);
  const common = { wakeFd, messageFd: wakeFd, idleTimeoutMs: 1000, saturated: () => true };
  try {
    assert.equal(new BlockingStream(-1, { ...common, splice: false }).spliceFrom, undefined);
    assert.equal(typeof new BlockingStream(-1, common).spliceFrom, "function");
  } finally {
    libc().close(wakeFd);
  }
});
