import assert from "node:assert/strict";
import { isServiceError } from "../src/errors.ts";
import { EventLog } from "../src/event_log.ts";
import type { SnapshotEvent } from "../src/driver.ts";

const noSpace = (sectors: number): SnapshotEvent => ({
  code: "no_space",
  timeMs: 1,
  requestedSectors: sectors,
});
const sectorsOf = (events: SnapshotEvent[]) =>
  events.map((e) => e.code === "no_space" ? e.requestedSectors : -1);

Deno.test("EventLog.wait() answers no events after the timeout", async () => {
  const log = new EventLog({ firstId: 1 });
  const page = await log.wait({ timeoutMs: 20 });
  assert.deepEqual(page, { events: [], lastId: 0, truncated: false });
});

Deno.test("EventLog ids start above those of a log made earlier (an earlier life)", async () => {
  const earlier = new EventLog();
  for (let i = 0; i < 10; i++) earlier.append(noSpace(i));
  await new Promise((resolve) => setTimeout(resolve, 2));
  const later = new EventLog();
  const first = later.append(noSpace(1))!;
  assert.ok(first.id > earlier.lastId, `${first.id} > ${earlier.lastId}`);
  assert.equal((await later.wait({ after: earlier.lastId, timeoutMs: 0 })).truncated, true);
});

Deno.test("EventLog gives increasing ids from firstId and every reader sees every event", async () => {
  const log = new EventLog({ firstId: 1000 });
  log.append(noSpace(1));
  log.append(noSpace(2));
  const first = await log.wait({ timeoutMs: 0 });
  const second = await log.wait({ after: 0, timeoutMs: 0 });
  assert.deepEqual(first.events.map((e) => e.id), [1000, 1001]);
  assert.deepEqual(second, first, "reading takes nothing");
  assert.equal(first.lastId, 1001);
  assert.deepEqual(sectorsOf((await log.wait({ after: 1000, timeoutMs: 0 })).events), [2]);
});

Deno.test("EventLog wakes every pending waiter with the same appended event", async () => {
  const log = new EventLog();
  const waits = [log.wait({ timeoutMs: 5000 }), log.wait({ timeoutMs: 5000 })];
  log.append(noSpace(7));
  const pages = await Promise.all(waits);
  assert.deepEqual(pages.map((p) => sectorsOf(p.events)), [[7], [7]]);
});

Deno.test("EventLog drops the oldest past its capacity and says so to a reader behind it", async () => {
  const log = new EventLog({ capacity: 3, firstId: 1 });
  for (let i = 1; i <= 5; i++) log.append(noSpace(i));
  assert.equal(log.size, 3);
  const behind = await log.wait({ after: 1, timeoutMs: 0 });
  assert.equal(behind.truncated, true, "event 2 was dropped");
  assert.deepEqual(sectorsOf(behind.events), [3, 4, 5]);
  const caughtUp = await log.wait({ after: 2, timeoutMs: 0 });
  assert.equal(caughtUp.truncated, false, "nothing after 2 was dropped");
});

Deno.test("EventLog: an id from before the log's first id reads as truncated, 0 does not", async () => {
  const log = new EventLog({ firstId: 5001 });
  const page = await log.wait({ after: 17, timeoutMs: 0 });
  assert.equal(page.truncated, true);
  assert.equal((await log.wait({ after: 5000, timeoutMs: 0 })).truncated, false);
  assert.equal((await log.wait({ after: 0, timeoutMs: 0 })).truncated, false, "from the start");
  for (let i = 0; i < 1025; i++) log.append(noSpace(i));
  assert.equal((await log.wait({ timeoutMs: 0 })).truncated, true, "the first was dropped");
});

Deno.test("EventLog: an aborted wait answers at once with nothing and takes nothing", async () => {
  const log = new EventLog();
  const abort = new AbortController();
  const waiting = log.wait({ timeoutMs: 60_000, signal: abort.signal });
  abort.abort();
  assert.deepEqual((await waiting).events, []);
  log.append(noSpace(3));
  assert.deepEqual(sectorsOf((await log.wait({ timeoutMs: 0 })).events), [3]);
});

Deno.test("EventLog.close() answers pending waits at once", async () => {
  const log = new EventLog();
  const waiting = log.wait({ timeoutMs: 60_000 });
  log.close();
  assert.deepEqual((await waiting).events, []);
  log.append(noSpace(1));
  assert.equal(log.size, 0, "appends after close are ignored");
});

Deno.test("EventLog.wait() rejects a negative timeout or id", async () => {
  const invalid = (e: unknown) => isServiceError(e, "INVALID_ARGUMENT");
  await assert.rejects(new EventLog().wait({ timeoutMs: -1 }), invalid);
  await assert.rejects(new EventLog().wait({ timeoutMs: 0, after: -2 }), invalid);
});
