/**
 * Conformance cases: waiting for events (timeouts, waits cut short by destroy), and the
 * overflow of a small difference storage.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { SnapshotEvent } from "../../../src/driver.ts";
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
  "waitEvent() without events resolves undefined after the timeout",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const taken = await takeNew(fx, [device]);
    const started = performance.now();
    assert.equal(await fx.driver.waitEvent(taken.id, 100), undefined);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 90, `waited ${elapsed.toFixed(0)} ms of 100`);
    assert.equal(await fx.driver.waitEvent(taken.id, 0), undefined);
    await rejectsWith(fx.driver.waitEvent(taken.id, -1), "INVALID_ARGUMENT", "a negative timeout");
    await rejectsWith(
      fx.driver.waitEvent(taken.id, 2.5),
      "INVALID_ARGUMENT",
      "a fractional timeout",
    );
  },
);

cases.add(
  "a waitEvent() pending when the snapshot is destroyed is NOT_FOUND",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const taken = await takeNew(fx, [device]);
    const started = performance.now();
    const waiting = rejectsWith(fx.driver.waitEvent(taken.id, 10_000), "NOT_FOUND", "pending");
    await new Promise((resolve) => setTimeout(resolve, 50));
    await fx.driver.destroySnapshot(taken.id);
    await waiting;
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 5_000, `the wait ended ${elapsed.toFixed(0)} ms after it began`);
    await rejectsWith(fx.driver.waitEvent(taken.id, 10), "NOT_FOUND", "a wait after destroy");
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
    const expected = content.slice();
    for (let chunk = 0; chunk < size / (256 * KiB); chunk++) {
      const data = randomBytes(4 * KiB, 400 + chunk);
      await fx.writeDevice(device, chunk * 256 * KiB + 8 * KiB, data);
      expected.set(data, chunk * 256 * KiB + 8 * KiB);
    }
    const events: SnapshotEvent[] = [];
    const deadline = Date.now() + 10_000;
    while (!events.some((e) => e.code === "corrupted") && Date.now() < deadline) {
      const event = await fx.driver.waitEvent(created.id, 1000);
      if (event) events.push(event);
    }
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
