/**
 * Conformance cases: waiting for events (timeouts, waits cut short by destroy), and the
 * overflow of a small difference storage.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { LoggedEvent } from "../../../src/driver.ts";
import { assertSameBytes, randomBytes, rejectsWith } from "../expect.ts";
import {
  attachNew,
  CaseList,
  type ConformanceCase,
  createSnapshot,
  KiB,
  MiB,
  SMALL,
  takeNew,
} from "../steps.ts";

const cases = new CaseList();

cases.add(
  "waitEvents() without events answers none after the timeout",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const taken = await takeNew(fx, [device]);
    const started = performance.now();
    const page = await fx.driver.waitEvents(taken.id, { timeoutMs: 100 });
    assert.deepEqual([page.events, page.truncated], [[], false]);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 90, `waited ${elapsed.toFixed(0)} ms of 100`);
    const now = await fx.driver.waitEvents(taken.id, { after: page.lastId, timeoutMs: 0 });
    assert.deepEqual(now.events, []);
    const wait = (options: { timeoutMs: number; after?: number }) =>
      fx.driver.waitEvents(taken.id, options);
    await rejectsWith(wait({ timeoutMs: -1 }), "INVALID_ARGUMENT", "a negative timeout");
    await rejectsWith(wait({ timeoutMs: 2.5 }), "INVALID_ARGUMENT", "a fractional timeout");
    await rejectsWith(wait({ timeoutMs: 0, after: -1 }), "INVALID_ARGUMENT", "a negative id");
  },
);

cases.add(
  "an aborted waitEvents() answers at once with no events",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const taken = await takeNew(fx, [device]);
    const abort = new AbortController();
    const started = performance.now();
    const waiting = fx.driver.waitEvents(taken.id, { timeoutMs: 60_000, signal: abort.signal });
    setTimeout(() => abort.abort(), 50);
    assert.deepEqual((await waiting).events, []);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 5_000, `the wait ended ${elapsed.toFixed(0)} ms after it began`);
  },
);

cases.add(
  "a waitEvents() pending when the snapshot is destroyed is NOT_FOUND",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const taken = await takeNew(fx, [device]);
    const started = performance.now();
    const waiting = rejectsWith(
      fx.driver.waitEvents(taken.id, { timeoutMs: 10_000 }),
      "NOT_FOUND",
      "pending",
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    await fx.driver.destroySnapshot(taken.id);
    await waiting;
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 5_000, `the wait ended ${elapsed.toFixed(0)} ms after it began`);
    await rejectsWith(
      fx.driver.waitEvents(taken.id, { timeoutMs: 10 }),
      "NOT_FOUND",
      "a wait after destroy",
    );
  },
);

cases.add(
  "overflow of a small difference storage: events, ENOSPC per device, the original keeps every write",
  ["overflow"],
  async (fx) => {
    // 64 chunks of 256 KiB: more than the 16 chunks a device keeps in memory before storing,
    // plus the 4 that a 1 MiB storage holds.
    const size = 16 * MiB;
    const content = randomBytes(size, 41);
    const device = await attachNew(fx, size, content);
    const created = await createSnapshot(fx, [device], MiB);
    await fx.driver.takeSnapshot(created.id);
    // Two consumers wait while the storage overflows; each must see every event.
    const consume = async () => {
      const seen: LoggedEvent[] = [];
      let after = 0;
      const deadline = Date.now() + 20_000;
      while (!seen.some((e) => e.code === "corrupted") && Date.now() < deadline) {
        const page = await fx.driver.waitEvents(created.id, { after, timeoutMs: 1000 });
        seen.push(...page.events);
        after = page.lastId;
      }
      return seen;
    };
    const consumers = [consume(), consume()];
    const expected = content.slice();
    for (let chunk = 0; chunk < size / (256 * KiB); chunk++) {
      const data = randomBytes(4 * KiB, 400 + chunk);
      await fx.writeDevice(device, chunk * 256 * KiB + 8 * KiB, data);
      expected.set(data, chunk * 256 * KiB + 8 * KiB);
    }
    const [events, other] = await Promise.all(consumers);
    assert.deepEqual(other, events, "both consumers saw the same events, with the same ids");
    const late = await fx.driver.waitEvents(created.id, { timeoutMs: 0 });
    assert.deepEqual(late.events, events, "a consumer coming later reads them all from the log");
    assert.deepEqual(
      late.events.map((e) => e.id),
      [...late.events.map((e) => e.id)].sort((a, b) => a - b),
    );
    const corrupted = events.find((e) => e.code === "corrupted");
    assert.ok(corrupted, `a corrupted event arrived (got ${JSON.stringify(events)})`);
    assert.equal(corrupted.errorCode, 28);
    assert.equal(corrupted.errorName, "ENOSPC");
    for (const event of events) assert.ok(Number.isFinite(event.timeMs));
    const info = await fx.driver.snapshotInfo(created.id);
    assert.equal(info.state, "corrupted");
    assert.deepEqual(info.devices.map((d) => [d.deviceId, d.errorCode, d.errorName]), [
      [device.id, 28, "ENOSPC"],
    ]);
    assertSameBytes(await fx.readDevice(device, 0, size), expected, "the original");
    await rejectsWith(
      fx.driver.readImage(created.id, device.id, 0, new Uint8Array(4 * KiB)),
      "SNAPSHOT_CORRUPTED",
      "reading the corrupted image",
    );
    await fx.driver.destroySnapshot(created.id);
    const after = randomBytes(4 * KiB, 499);
    await fx.writeDevice(device, 0, after);
    assertSameBytes(await fx.readDevice(device, 0, after.length), after, "a write after destroy");
  },
);

/** The cases of this file. */
export const eventCases: readonly ConformanceCase[] = cases.all;
