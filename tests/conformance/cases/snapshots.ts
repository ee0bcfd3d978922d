/**
 * Conformance cases: the life of a snapshot (create, add, take, info, list, destroy) and its errors.
 *
 * @module
 */

import assert from "node:assert/strict";
import { basename, dirname } from "node:path";
import { assertSameBytes, randomBytes, rejectsWith } from "../expect.ts";
import {
  attachNew,
  CaseList,
  type ConformanceCase,
  createSnapshot,
  KiB,
  MiB,
  SMALL,
  STORAGE_LIMIT,
  takeNew,
} from "../steps.ts";

const cases = new CaseList();

cases.add("a snapshot's life: create, add, take, info, list, destroy", [], async (fx) => {
  const [a, b] = [await attachNew(fx, SMALL), await attachNew(fx, 2 * MiB)];
  const created = await createSnapshot(fx, [a]);
  assert.equal(created.state, "created");
  assert.equal(created.writable, false);
  assert.ok(!Number.isNaN(Date.parse(created.createdAt)));
  assert.equal(created.takenAt, undefined);
  assert.deepEqual(created.devices.map((d) => [d.deviceId, d.errorCode, d.locator]), [
    [a.id, 0, undefined],
  ]);
  const added = await fx.driver.addDevice(created.id, b.id);
  assert.deepEqual(added.devices.map((d) => d.deviceId), [a.id, b.id]);
  assert.equal((await fx.driver.getDevice(b.id)).snapshotId, created.id);
  const taken = await fx.driver.takeSnapshot(created.id);
  assert.equal(taken.state, "taken");
  assert.ok(!Number.isNaN(Date.parse(taken.takenAt ?? "")));
  for (const image of taken.devices) {
    assert.equal(image.errorCode, 0);
    assert.equal(typeof image.locator, "string", `${image.deviceId} has an image locator`);
  }
  assert.deepEqual(await fx.driver.snapshotInfo(created.id), taken);
  assert.deepEqual((await fx.driver.listSnapshots()).map((s) => s.id), [created.id]);
  await fx.driver.destroySnapshot(created.id);
  assert.deepEqual(await fx.driver.listSnapshots(), []);
  await rejectsWith(fx.driver.snapshotInfo(created.id), "NOT_FOUND", "info after destroy");
  await rejectsWith(fx.driver.destroySnapshot(created.id), "NOT_FOUND", "destroy twice");
  for (const device of [a, b]) {
    const now = await fx.driver.getDevice(device.id);
    assert.equal(now.snapshotId, undefined, `${device.id} left the snapshot`);
  }
});

cases.add("takeSnapshot() of a taken snapshot is CONFLICT", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const taken = await takeNew(fx, [device]);
  await rejectsWith(fx.driver.takeSnapshot(taken.id), "CONFLICT", "take twice");
  assert.equal((await fx.driver.cbtInfo(device.id)).changesNumber, 1, "the CBT did not switch");
});

cases.add(
  "a device cannot be in two snapshots: create and addDevice are CONFLICT",
  [],
  async (fx) => {
    const [a, b] = [await attachNew(fx, SMALL), await attachNew(fx, SMALL)];
    const first = await createSnapshot(fx, [a]);
    await rejectsWith(createSnapshot(fx, [a]), "CONFLICT", "create with a device of another");
    await rejectsWith(createSnapshot(fx, [b, a]), "CONFLICT", "create with one device of another");
    const second = await createSnapshot(fx, [b]);
    await rejectsWith(fx.driver.addDevice(second.id, a.id), "CONFLICT", "add a device of another");
    await rejectsWith(fx.driver.addDevice(first.id, a.id), "CONFLICT", "add a device twice");
    const ids = (await fx.driver.listSnapshots()).map((s) => s.id).sort();
    assert.deepEqual(ids, [first.id, second.id].sort(), "failed creates left nothing");
    assert.deepEqual((await fx.driver.snapshotInfo(first.id)).devices.map((d) => d.deviceId), [
      a.id,
    ]);
  },
);

cases.add("addDevice() to a taken snapshot is CONFLICT", [], async (fx) => {
  const [a, b] = [await attachNew(fx, SMALL), await attachNew(fx, SMALL)];
  const taken = await takeNew(fx, [a]);
  await rejectsWith(fx.driver.addDevice(taken.id, b.id), "CONFLICT", "add after take");
  assert.equal((await fx.driver.getDevice(b.id)).snapshotId, undefined);
});

cases.add("an unknown snapshot id is NOT_FOUND for every snapshot call", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const id = crypto.randomUUID();
  const { driver } = fx;
  await rejectsWith(driver.snapshotInfo(id), "NOT_FOUND", "snapshotInfo");
  await rejectsWith(driver.takeSnapshot(id), "NOT_FOUND", "takeSnapshot");
  await rejectsWith(driver.addDevice(id, device.id), "NOT_FOUND", "addDevice");
  await rejectsWith(driver.destroySnapshot(id), "NOT_FOUND", "destroySnapshot");
  await rejectsWith(driver.waitEvents(id, { timeoutMs: 10 }), "NOT_FOUND", "waitEvents");
  await rejectsWith(driver.imageSize(id, device.id), "NOT_FOUND", "imageSize");
  await rejectsWith(driver.readImage(id, device.id, 0, new Uint8Array(512)), "NOT_FOUND", "read");
  await rejectsWith(driver.snapshotInfo("not-a-uuid"), "NOT_FOUND", "a malformed id");
});

cases.add("createSnapshot() takes a directory for the difference storage", [], async (fx) => {
  const content = randomBytes(SMALL, 61);
  const device = await attachNew(fx, SMALL, content);
  const directory = dirname(await fx.storagePath());
  const created = await fx.driver.createSnapshot({
    deviceIds: [device.id],
    diffStorage: { path: directory, limitBytes: STORAGE_LIMIT },
  });
  const taken = await fx.driver.takeSnapshot(created.id);
  assert.equal(taken.state, "taken");
  const head = new Uint8Array(64 * KiB);
  await fx.driver.readImage(created.id, device.id, 0, head);
  assertSameBytes(head, content.subarray(0, head.length), "the image");
  await fx.driver.destroySnapshot(created.id);
  assert.ok((await Deno.stat(directory)).isDirectory, "the directory stays");
});

cases.add("createSnapshot() records writable and accepts devices later", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const created = await fx.driver.createSnapshot({
    deviceIds: [],
    diffStorage: { path: await fx.storagePath(), limitBytes: STORAGE_LIMIT },
    writable: true,
  });
  assert.equal(created.writable, true);
  await rejectsWith(fx.driver.addDevice(created.id, "no-such-device"), "NOT_FOUND", "unknown");
  const added = await fx.driver.addDevice(created.id, device.id);
  assert.deepEqual(added.devices.map((d) => d.deviceId), [device.id]);
  const taken = await fx.driver.takeSnapshot(created.id);
  assert.equal(taken.writable, true);
  assert.equal(await fx.driver.imageSize(created.id, device.id), SMALL);
});

cases.add(
  "createSnapshot() refuses malformed options with INVALID_ARGUMENT",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const create = (deviceIds: string[], path: string, limitBytes = STORAGE_LIMIT) =>
      fx.driver.createSnapshot({ deviceIds, diffStorage: { path, limitBytes } });
    const storage = await fx.storagePath();
    await rejectsWith(create([device.id, device.id], storage), "INVALID_ARGUMENT", "listed twice");
    await rejectsWith(create([device.id], basename(storage)), "INVALID_ARGUMENT", "relative path");
    await rejectsWith(create([device.id], storage, 0), "INVALID_ARGUMENT", "a zero limit");
    await rejectsWith(
      create([device.id], device.path),
      "INVALID_ARGUMENT",
      "storage on the device",
    );
    assert.deepEqual(await fx.driver.listSnapshots(), []);
    assert.equal((await fx.driver.getDevice(device.id)).snapshotId, undefined);
  },
);

cases.add(
  "createSnapshot() with an unknown device is NOT_FOUND and creates nothing",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    await rejectsWith(
      fx.driver.createSnapshot({
        deviceIds: [device.id, "no-such-device"],
        diffStorage: { path: await fx.storagePath(), limitBytes: STORAGE_LIMIT },
      }),
      "NOT_FOUND",
      "create with an unknown device",
    );
    assert.deepEqual(await fx.driver.listSnapshots(), []);
    assert.equal((await fx.driver.getDevice(device.id)).snapshotId, undefined);
  },
);

cases.add("takeSnapshot() of a snapshot without devices is CONFLICT", [], async (fx) => {
  const empty = await createSnapshot(fx, []);
  assert.deepEqual(empty.devices, []);
  await rejectsWith(fx.driver.takeSnapshot(empty.id), "CONFLICT", "take an empty snapshot");
  assert.equal((await fx.driver.snapshotInfo(empty.id)).state, "created");
  await fx.driver.destroySnapshot(empty.id);
});

/** The cases of this file. */
export const snapshotCases: readonly ConformanceCase[] = cases.all;
