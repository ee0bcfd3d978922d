/**
 * Conformance cases: version and capabilities; attach, list, get and detach, and their errors.
 *
 * @module
 */

import assert from "node:assert/strict";
import { basename, dirname } from "node:path";
import { rejectsWith } from "../expect.ts";
import {
  attachNew,
  CAPABILITIES,
  CaseList,
  type ConformanceCase,
  createSnapshot,
  SMALL,
  takeNew,
} from "../steps.ts";

const cases = new CaseList();

cases.add(
  "version() reports its backend and only known capabilities",
  [],
  async (fx, target) => {
    const version = await fx.driver.version();
    assert.equal(version.backend, target.backend);
    assert.ok(Array.isArray(version.capabilities));
    for (const capability of version.capabilities) {
      assert.ok(CAPABILITIES.includes(capability), `unknown capability ${capability}`);
    }
    for (const needed of ["cbt", "cbt-dirty", "image-read", "events"] as const) {
      assert.ok(version.capabilities.includes(needed), `${needed} is missing`);
    }
    if (version.backend === "kernel") {
      assert.ok(version.profile === "upstream" || version.profile === "outoftree");
      assert.match(version.moduleVersion ?? "", /^\d+\.\d+\.\d+\.\d+$/);
    } else {
      assert.ok(version.capabilities.includes("nbd-exports"));
    }
  },
);

cases.add(
  "attach() tracks a device that getDevice() and listDevices() show",
  [],
  async (fx) => {
    const path = await fx.createDevice(SMALL);
    const device = await fx.driver.attach(path, { name: "conformance-a" });
    assert.equal(device.id, "conformance-a");
    assert.equal(device.path, path);
    assert.equal(device.capacityBytes, SMALL);
    assert.equal(device.snapshotId, undefined);
    assert.equal(typeof device.locator, "string");
    assert.ok(device.locator.length > 0);
    assert.deepEqual(await fx.driver.getDevice("conformance-a"), device);
    assert.deepEqual(await fx.driver.listDevices(), [device]);
  },
);

cases.add("attach() takes a name of letters, digits and . _ : - as the id", [], async (fx) => {
  const path = await fx.createDevice(SMALL);
  const device = await fx.driver.attach(path, { name: "pci-0000:00:05.0_v1" });
  assert.equal(device.id, "pci-0000:00:05.0_v1");
  assert.equal((await fx.driver.cbtInfo(device.id)).capacityBytes, SMALL);
  const snapshot = await takeNew(fx, [device]);
  assert.equal(await fx.driver.imageSize(snapshot.id, device.id), SMALL);
});

cases.add("attach() of a missing path is NOT_FOUND", [], async (fx) => {
  const path = await fx.createDevice(SMALL);
  await rejectsWith(fx.driver.attach(`${path}-missing`), "NOT_FOUND", "attach a missing path");
  assert.deepEqual(await fx.driver.listDevices(), []);
});

cases.add(
  "attach() of an attached device is CONFLICT, under its name or another",
  [],
  async (fx) => {
    const path = await fx.createDevice(SMALL);
    const device = await fx.driver.attach(path);
    await rejectsWith(fx.driver.attach(path), "CONFLICT", "attach the same path again");
    await rejectsWith(
      fx.driver.attach(path, { name: "other-name" }),
      "CONFLICT",
      "attach the same path under another name",
    );
    const second = await fx.createDevice(SMALL);
    await rejectsWith(
      fx.driver.attach(second, { name: device.id }),
      "CONFLICT",
      "attach another device under a taken name",
    );
    assert.deepEqual((await fx.driver.listDevices()).map((d) => d.id), [device.id]);
  },
);

cases.add(
  "attach() of a relative path, a directory or a bad name is INVALID_ARGUMENT",
  [],
  async (fx) => {
    const path = await fx.createDevice(SMALL);
    const directory = dirname(await fx.storagePath());
    await rejectsWith(fx.driver.attach(basename(path)), "INVALID_ARGUMENT", "a relative path");
    await rejectsWith(fx.driver.attach(directory), "INVALID_ARGUMENT", "a directory");
    await rejectsWith(
      fx.driver.attach(path, { name: "bad/name" }),
      "INVALID_ARGUMENT",
      "a name with a slash",
    );
    await rejectsWith(fx.driver.attach(path, { name: "" }), "INVALID_ARGUMENT", "an empty name");
    assert.deepEqual(await fx.driver.listDevices(), []);
  },
);

cases.add("device calls with an unknown id are NOT_FOUND", [], async (fx) => {
  await attachNew(fx, SMALL);
  const { driver } = fx;
  await rejectsWith(driver.getDevice("no-such-device"), "NOT_FOUND", "getDevice");
  await rejectsWith(driver.detach("no-such-device"), "NOT_FOUND", "detach");
  await rejectsWith(driver.cbtInfo("no-such-device"), "NOT_FOUND", "cbtInfo");
  await rejectsWith(
    driver.readCbtMap("no-such-device", { offset: 0, length: 1 }),
    "NOT_FOUND",
    "readCbtMap",
  );
  await rejectsWith(
    driver.markDirty("no-such-device", [{ offsetSectors: 0, countSectors: 1 }]),
    "NOT_FOUND",
    "markDirty",
  );
});

cases.add(
  "detach() stops tracking; attaching again starts a new CBT generation",
  [],
  async (fx) => {
    const path = await fx.createDevice(SMALL);
    const device = await fx.driver.attach(path);
    const before = await fx.driver.cbtInfo(device.id);
    await fx.driver.detach(device.id);
    assert.deepEqual(await fx.driver.listDevices(), []);
    await rejectsWith(fx.driver.cbtInfo(device.id), "NOT_FOUND", "cbtInfo after detach");
    const again = await fx.driver.attach(path);
    const after = await fx.driver.cbtInfo(again.id);
    assert.notEqual(after.generationId, before.generationId);
    assert.equal(after.changesNumber, 0);
  },
);

cases.add(
  "detach() of a device in a snapshot is CONFLICT, before and after take",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const snapshot = await createSnapshot(fx, [device]);
    assert.equal((await fx.driver.getDevice(device.id)).snapshotId, snapshot.id);
    await rejectsWith(fx.driver.detach(device.id), "CONFLICT", "detach in a created snapshot");
    await fx.driver.takeSnapshot(snapshot.id);
    await rejectsWith(fx.driver.detach(device.id), "CONFLICT", "detach in a taken snapshot");
    assert.deepEqual((await fx.driver.listDevices()).map((d) => d.id), [device.id]);
  },
);

/** The cases of this file. */
export const deviceCases: readonly ConformanceCase[] = cases.all;
