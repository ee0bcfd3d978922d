/**
 * Issue 10, point 2: a thousand request bodies that stop short of their
 * Content-Length hold bounded memory and are dropped after the body
 * timeout; half-sent headers are dropped after the headers timeout.
 *
 * @module
 */

import assert from "node:assert/strict";
import { raiseOpenFileLimit } from "../../src/cli/open_file_limit.ts";
import { closeAll, figures, flood, probe, startServe, withRoot } from "./_serve.ts";

raiseOpenFileLimit();

const MIB = 2 ** 20;
const encoder = new TextEncoder();

for (const declared of [4 * MIB, 32 << 10]) {
  const fits = Math.floor(64 * MIB / declared);
  Deno.test(`a thousand slow bodies of ${declared} bytes: bounded RSS, 503 past the body budget, all dropped after the body timeout`, async () => {
    await withRoot(async ({ allowed }) => {
      await using serve = await startServe(allowed, {
        args: [
          "--http-max-connections",
          "2000",
          "--body-timeout",
          "3000",
          "--body-bytes-in-flight",
          String(64 * MIB),
        ],
      });
      const port = Number(new URL(serve.baseUrl).port);
      const before = serve.rssBytes();
      const { conns } = await flood(port, 1000);
      assert.equal(conns.length, 1000);
      const head = encoder.encode(
        "POST /v1/devices HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" +
          `content-length: ${declared}\r\n\r\n{"path": "`,
      );
      const started = performance.now();
      await Promise.all(conns.map((conn) => conn.write(head).catch(() => 0)));
      // Some slow bodies keep trickling: a byte a second does not reset the timeout.
      const trickle = setInterval(() => {
        for (const conn of conns.slice(0, 50)) conn.write(encoder.encode("a")).catch(() => {});
      }, 1000);
      let peak = 0;
      const sampling = setInterval(() => peak = Math.max(peak, serve.rssBytes()), 100);
      try {
        // One read per connection, raced against two deadlines: the answer (a 503) comes at
        // once; a held body ends with the connection closed after the body timeout.
        const reads = conns.map(firstRead);
        const firstLook = await Promise.all(reads.map((read) => within(read, 1000, "pending")));
        const refused = firstLook.filter((text) => /^HTTP\/1\.1 503 /.test(text)).length;
        const held = firstLook.filter((text) => text === "pending").length;
        // 64 MiB of budget holds 16 bodies of 4 MiB (or all of 32 KiB); others are refused at once.
        assert.equal(held, Math.min(fits, conns.length), `${held} bodies held`);
        assert.equal(refused, conns.length - held, `${refused} refused for the budget`);
        const status = await fetch(`${serve.baseUrl}/v1/version`);
        assert.equal(status.status, 200, "the service answers meanwhile");
        await status.body?.cancel();
        const heldReads = reads.filter((_, i) => firstLook[i] === "pending");
        const ends = await Promise.all(heldReads.map((read) => within(read, 6000, "open")));
        const droppedMs = performance.now() - started;
        assert.deepEqual(
          ends.filter((e) => e !== ""),
          [],
          "every held body was dropped unanswered",
        );
        assert.ok(serve.alive());
        figures("slow-bodies", {
          declaredBytes: declared,
          connections: conns.length,
          refused503: refused,
          held,
          droppedAfterMs: droppedMs.toFixed(0),
          rssBeforeMiB: (before / MIB).toFixed(0),
          rssPeakMiB: (peak / MIB).toFixed(0),
        });
        assert.ok(peak - before < 200 * MIB, `RSS grew by ${(peak - before) / MIB} MiB`);
      } finally {
        clearInterval(trickle);
        clearInterval(sampling);
        closeAll(conns);
      }
    });
  });
}

Deno.test("half-sent headers and idle keep-alive connections are dropped after their timeouts", async () => {
  await withRoot(async ({ allowed }) => {
    await using serve = await startServe(allowed, {
      args: ["--headers-timeout", "1000", "--idle-timeout", "1500"],
    });
    const port = Number(new URL(serve.baseUrl).port);
    const { conns } = await flood(port, 200);
    await Promise.all(
      conns.map((conn) => conn.write(encoder.encode("GET /v1/version HTTP/1.1\r\nhost: x\r\n"))),
    );
    const started = performance.now();
    const ends = await Promise.all(conns.map((conn) => probe(conn, 5000)));
    const halfDropped = performance.now() - started;
    assert.deepEqual(ends.filter((e) => e !== "eof"), [], "half-sent heads were dropped");
    closeAll(conns);
    const idle = await flood(port, 50);
    const keepAlive = encoder.encode("GET /v1/version HTTP/1.1\r\nhost: x\r\n\r\n");
    await Promise.all(idle.conns.map((conn) => conn.write(keepAlive)));
    const answered = await Promise.all(idle.conns.map((conn) => readSome(conn, 3000)));
    assert.ok(answered.every((text) => /^HTTP\/1\.1 200 /.test(text)), "answered and kept open");
    const idleStarted = performance.now();
    const idleEnds = await Promise.all(idle.conns.map((conn) => probe(conn, 5000)));
    assert.deepEqual(idleEnds.filter((e) => e !== "eof"), [], "idle connections were closed");
    figures("timeouts", {
      halfHeads: conns.length,
      halfHeadsDroppedMs: halfDropped.toFixed(0),
      idleKeepAlive: idle.conns.length,
      idleDroppedMs: (performance.now() - idleStarted).toFixed(0),
    });
    closeAll(idle.conns);
  });
});

/** The first bytes `conn` receives as text; "" at end of stream. */
async function firstRead(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(1024);
  const n = await conn.read(buffer).catch(() => null);
  return n ? new TextDecoder().decode(buffer.subarray(0, n)) : "";
}

/** `promise`'s value, or `otherwise` when it takes longer than `timeoutMs`. */
async function within<T>(promise: Promise<T>, timeoutMs: number, otherwise: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<T>((resolve) => timer = setTimeout(() => resolve(otherwise), timeoutMs));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** What arrives on `conn` within `timeoutMs` ("" for nothing, or on end of stream). */
async function readSome(conn: Deno.Conn, timeoutMs: number): Promise<string> {
  const buffer = new Uint8Array(1024);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), timeoutMs));
  try {
    const n = await Promise.race([conn.read(buffer).catch(() => null), late]);
    return n ? new TextDecoder().decode(buffer.subarray(0, n)) : "";
  } finally {
    clearTimeout(timer);
  }
}
