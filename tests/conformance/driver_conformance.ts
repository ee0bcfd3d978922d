/**
 * The SnapshotDriver conformance suite: one set of cases that every backend
 * must pass, with the ServiceError codes of src/errors.ts as the contract.
 * {@link registerDriverConformance} registers the cases as Deno tests for a
 * {@link ConformanceTarget}; a runner file per backend calls it:
 *
 * - tests/userspace/userspace_conformance_test.ts (UserspaceDriver),
 * - tests/kernel/kernel_conformance_test.ts (KernelDriver on the fake kernel),
 * - the lab's e2e file (KernelDriver on the real module).
 *
 * Sizes: devices of 1 MiB + 4 KiB have 17 tracking blocks of 64 KiB, the
 * last one short; 2 and 4 MiB devices have 8 and 16 chunks of 256 KiB (the
 * kernel's minimum chunk). Writes are 4 KiB-aligned so that page-cache
 * writeback on a real block device touches exactly the blocks written.
 *
 * @module
 */

import assert from "node:assert/strict";
import { basename, dirname } from "node:path";
import type { DeviceInfo, SnapshotEvent, SnapshotInfo } from "../../src/driver.ts";
import { isServiceError } from "../../src/errors.ts";
import {
  assertSameBytes,
  blocksAtLeast,
  blocksOf,
  expectedTracking,
  randomBytes,
  rejectsWith,
  SECTOR,
} from "./expect.ts";
import type { ConformanceFeature, ConformanceFixture, ConformanceTarget } from "./fixture.ts";

export type {
  ConformanceFeature,
  ConformanceFixture,
  ConformanceTarget,
  CreateDeviceOptions,
} from "./fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** 17 tracking blocks of 64 KiB, the last one 4 KiB long. */
const SMALL = MiB + 4 * KiB;
const STORAGE_LIMIT = 64 * MiB;
const CAPABILITIES = [
  "cbt",
  "cbt-dirty",
  "writable-images",
  "image-read",
  "nbd-exports",
  "events",
  "multi-device-snapshots",
];

type Body = (fx: ConformanceFixture, target: ConformanceTarget) => Promise<void>;

interface Case {
  name: string;
  needs: ConformanceFeature[];
  body: Body;
}

const cases: Case[] = [];

function conformanceCase(name: string, needs: ConformanceFeature[], body: Body): void {
  cases.push({ name, needs, body });
}

/**
 * Registers every conformance case for `target` as a Deno test named
 * "`target.name`: <behaviour>". Cases needing a feature the target lists as
 * unsupported (or all cases, with `target.ignore`) are skipped, their reason
 * printed and passed to `target.onSkip`.
 */
export function registerDriverConformance(target: ConformanceTarget): void {
  for (const { name, needs, body } of cases) {
    const full = `${target.name}: ${name}`;
    const missing = needs.find((feature) => target.unsupported?.[feature] !== undefined);
    const reason = target.ignore ??
      (missing === undefined ? undefined : `${missing}: ${target.unsupported![missing]}`);
    if (reason !== undefined) {
      console.log(`skipping "${full}": ${reason}`);
      target.onSkip?.(full, reason);
    }
    Deno.test({
      name: full,
      ignore: reason !== undefined,
      sanitizeOps: target.sanitizeOps ?? true,
      sanitizeResources: target.sanitizeResources ?? true,
      async fn() {
        const fx = await target.setup();
        try {
          await body(fx, target);
        } finally {
          await fx.cleanup();
        }
      },
    });
  }
}

async function attachNew(
  fx: ConformanceFixture,
  sizeBytes: number,
  content?: Uint8Array,
): Promise<DeviceInfo> {
  return await fx.driver.attach(await fx.createDevice(sizeBytes, { content }));
}

async function createSnapshot(
  fx: ConformanceFixture,
  devices: DeviceInfo[],
  limitBytes = STORAGE_LIMIT,
): Promise<SnapshotInfo> {
  return await fx.driver.createSnapshot({
    deviceIds: devices.map((d) => d.id),
    diffStorage: { path: await fx.storagePath(), limitBytes },
  });
}

/** Creates and takes a snapshot of `devices`. */
async function takeNew(fx: ConformanceFixture, devices: DeviceInfo[]): Promise<SnapshotInfo> {
  const created = await createSnapshot(fx, devices);
  return await fx.driver.takeSnapshot(created.id);
}

async function readWholeImage(
  fx: ConformanceFixture,
  snapshotId: string,
  deviceId: string,
  sizeBytes: number,
  pieceBytes = 64 * KiB,
): Promise<Uint8Array> {
  const image = new Uint8Array(sizeBytes);
  for (let offset = 0; offset < sizeBytes; offset += pieceBytes) {
    const piece = image.subarray(offset, Math.min(offset + pieceBytes, sizeBytes));
    await fx.driver.readImage(snapshotId, deviceId, offset, piece);
  }
  return image;
}

// ---- version and devices ----

conformanceCase(
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

conformanceCase(
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

conformanceCase("attach() of a missing path is NOT_FOUND", [], async (fx) => {
  const path = await fx.createDevice(SMALL);
  await rejectsWith(fx.driver.attach(`${path}-missing`), "NOT_FOUND", "attach a missing path");
  assert.deepEqual(await fx.driver.listDevices(), []);
});

conformanceCase(
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

conformanceCase(
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

conformanceCase("device calls with an unknown id are NOT_FOUND", [], async (fx) => {
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

conformanceCase(
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

conformanceCase(
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

// ---- CBT ----

conformanceCase(
  "cbtInfo() after attach: kernel sizing, a generation UUID, changes number 0",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const info = await fx.driver.cbtInfo(device.id);
    const expected = expectedTracking(SMALL);
    assert.equal(info.capacityBytes, SMALL);
    assert.equal(info.blockSizeBytes, expected.blockSize);
    assert.equal(info.blockCount, expected.blockCount);
    assert.equal(info.blockCount, 17);
    assert.match(
      info.generationId,
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
    assert.equal(info.changesNumber, 0);
    assert.deepEqual(
      await fx.driver.readCbtMap(device.id, { offset: 0, length: 17 }),
      new Uint8Array(17),
    );
  },
);

conformanceCase(
  "cbtInfo() of a device past 2,097,152 blocks of 64 KiB uses 128 KiB blocks",
  ["large-devices"],
  async (fx) => {
    const capacity = 128 * 1024 * MiB + 64 * KiB;
    const device = await attachNew(fx, capacity);
    const info = await fx.driver.cbtInfo(device.id);
    assert.equal(info.capacityBytes, capacity);
    assert.equal(info.blockSizeBytes, 128 * KiB);
    assert.equal(info.blockCount, 1_048_577);
    assert.deepEqual(expectedTracking(capacity), { blockSize: 128 * KiB, blockCount: 1_048_577 });
  },
);

conformanceCase(
  "the changes number is 1 after the first take and the generation stays",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const before = await fx.driver.cbtInfo(device.id);
    await takeNew(fx, [device]);
    const after = await fx.driver.cbtInfo(device.id);
    assert.equal(after.changesNumber, 1);
    assert.equal(after.generationId, before.generationId);
    assert.equal(after.blockCount, before.blockCount);
  },
);

conformanceCase(
  "readCbtMap() returns the requested range, OUT_OF_RANGE past the end",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const { blockCount } = await fx.driver.cbtInfo(device.id);
    assert.equal(
      (await fx.driver.readCbtMap(device.id, { offset: 0, length: blockCount })).length,
      17,
    );
    assert.equal((await fx.driver.readCbtMap(device.id, { offset: 5, length: 3 })).length, 3);
    assert.equal((await fx.driver.readCbtMap(device.id, { offset: 16, length: 1 })).length, 1);
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: 16, length: 2 }),
      "OUT_OF_RANGE",
      "a range crossing the end",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: 0, length: blockCount + 1 }),
      "OUT_OF_RANGE",
      "one block too many",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: blockCount + 4, length: 1 }),
      "OUT_OF_RANGE",
      "a range starting past the end",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: -1, length: 1 }),
      "INVALID_ARGUMENT",
      "a negative offset",
    );
    await rejectsWith(
      fx.driver.readCbtMap(device.id, { offset: 0, length: 1.5 }),
      "INVALID_ARGUMENT",
      "a fractional length",
    );
  },
);

conformanceCase("CBT across two takes covers exactly the written blocks", ["data"], async (fx) => {
  const device = await attachNew(fx, SMALL, randomBytes(SMALL, 11));
  const first = await takeNew(fx, [device]);
  const { blockSizeBytes, generationId } = await fx.driver.cbtInfo(device.id);
  const writes = [
    { offset: 64 * KiB + 8 * KiB, length: 4 * KiB }, // block 1
    { offset: 4 * 64 * KiB - 4 * KiB, length: 8 * KiB }, // blocks 3 and 4
    { offset: 10 * 64 * KiB, length: 64 * KiB }, // block 10, exactly
    { offset: MiB, length: 4 * KiB }, // block 16, the short last one
  ];
  await fx.writeDevice(device, writes[0].offset, randomBytes(writes[0].length, 1));
  await fx.writeDevice(device, writes[1].offset, randomBytes(writes[1].length, 2));
  await fx.driver.destroySnapshot(first.id);
  await fx.writeDevice(device, writes[2].offset, randomBytes(writes[2].length, 3));
  await fx.writeDevice(device, writes[3].offset, randomBytes(writes[3].length, 4));
  await takeNew(fx, [device]);
  const info = await fx.driver.cbtInfo(device.id);
  assert.equal(info.changesNumber, 2);
  assert.equal(info.generationId, generationId);
  const map = await fx.driver.readCbtMap(device.id, { offset: 0, length: info.blockCount });
  const written = [...new Set(writes.flatMap((w) => blocksOf(w.offset, w.length, blockSizeBytes)))];
  assert.deepEqual(written, [1, 3, 4, 10, 16]);
  assert.deepEqual(blocksAtLeast(map, info.changesNumber), written);
  assert.deepEqual(blocksAtLeast(map, 1), written, "no other block changed since attach");
});

conformanceCase("markDirty() ranges show in the map after the next take", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const first = await takeNew(fx, [device]);
  await fx.driver.destroySnapshot(first.id);
  const { generationId } = await fx.driver.cbtInfo(device.id);
  await fx.driver.markDirty(device.id, [
    { offsetSectors: 128, countSectors: 1 }, // block 1
    { offsetSectors: 7 * 128 - 1, countSectors: 2 }, // blocks 6 and 7
    { offsetSectors: 2048, countSectors: 8 }, // block 16, the last one
  ]);
  await takeNew(fx, [device]);
  const info = await fx.driver.cbtInfo(device.id);
  assert.equal(info.changesNumber, 2);
  assert.equal(info.generationId, generationId);
  const map = await fx.driver.readCbtMap(device.id, { offset: 0, length: info.blockCount });
  assert.deepEqual(blocksAtLeast(map, 2), [1, 6, 7, 16]);
  assert.deepEqual(blocksAtLeast(map, 1), [1, 6, 7, 16]);
});

conformanceCase("markDirty() past the end of the device is OUT_OF_RANGE", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const sectors = SMALL / SECTOR;
  await fx.driver.markDirty(device.id, [{ offsetSectors: sectors - 1, countSectors: 1 }]);
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: sectors - 1, countSectors: 2 }]),
    "OUT_OF_RANGE",
    "a range one sector past the capacity",
  );
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: 17 * 128, countSectors: 1 }]),
    "OUT_OF_RANGE",
    "a range past the last block",
  );
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: 0, countSectors: 0 }]),
    "INVALID_ARGUMENT",
    "an empty range",
  );
  await rejectsWith(
    fx.driver.markDirty(device.id, [{ offsetSectors: -8, countSectors: 8 }]),
    "INVALID_ARGUMENT",
    "a negative offset",
  );
});

// ---- snapshots ----

conformanceCase("a snapshot's life: create, add, take, info, list, destroy", [], async (fx) => {
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

conformanceCase("takeSnapshot() of a taken snapshot is CONFLICT", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const taken = await takeNew(fx, [device]);
  await rejectsWith(fx.driver.takeSnapshot(taken.id), "CONFLICT", "take twice");
  assert.equal((await fx.driver.cbtInfo(device.id)).changesNumber, 1, "the CBT did not switch");
});

conformanceCase(
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

conformanceCase("addDevice() to a taken snapshot is CONFLICT", [], async (fx) => {
  const [a, b] = [await attachNew(fx, SMALL), await attachNew(fx, SMALL)];
  const taken = await takeNew(fx, [a]);
  await rejectsWith(fx.driver.addDevice(taken.id, b.id), "CONFLICT", "add after take");
  assert.equal((await fx.driver.getDevice(b.id)).snapshotId, undefined);
});

conformanceCase("an unknown snapshot id is NOT_FOUND for every snapshot call", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const id = crypto.randomUUID();
  const { driver } = fx;
  await rejectsWith(driver.snapshotInfo(id), "NOT_FOUND", "snapshotInfo");
  await rejectsWith(driver.takeSnapshot(id), "NOT_FOUND", "takeSnapshot");
  await rejectsWith(driver.addDevice(id, device.id), "NOT_FOUND", "addDevice");
  await rejectsWith(driver.destroySnapshot(id), "NOT_FOUND", "destroySnapshot");
  await rejectsWith(driver.waitEvent(id, 10), "NOT_FOUND", "waitEvent");
  await rejectsWith(driver.imageSize(id, device.id), "NOT_FOUND", "imageSize");
  await rejectsWith(driver.readImage(id, device.id, 0, new Uint8Array(512)), "NOT_FOUND", "read");
  await rejectsWith(driver.snapshotInfo("not-a-uuid"), "NOT_FOUND", "a malformed id");
});

conformanceCase("createSnapshot() records writable and accepts devices later", [], async (fx) => {
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

conformanceCase(
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

conformanceCase(
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

conformanceCase("takeSnapshot() of a snapshot without devices is CONFLICT", [], async (fx) => {
  const empty = await createSnapshot(fx, []);
  assert.deepEqual(empty.devices, []);
  await rejectsWith(fx.driver.takeSnapshot(empty.id), "CONFLICT", "take an empty snapshot");
  assert.equal((await fx.driver.snapshotInfo(empty.id)).state, "created");
  await fx.driver.destroySnapshot(empty.id);
});

// ---- images ----

conformanceCase(
  "imageSize() is the capacity at take; before take it is CONFLICT",
  [],
  async (fx) => {
    const [a, b] = [await attachNew(fx, SMALL), await attachNew(fx, 2 * MiB)];
    const created = await createSnapshot(fx, [a, b]);
    await rejectsWith(fx.driver.imageSize(created.id, a.id), "CONFLICT", "imageSize before take");
    await rejectsWith(
      fx.driver.readImage(created.id, a.id, 0, new Uint8Array(512)),
      "CONFLICT",
      "readImage before take",
    );
    await fx.driver.takeSnapshot(created.id);
    assert.equal(await fx.driver.imageSize(created.id, a.id), SMALL);
    assert.equal(await fx.driver.imageSize(created.id, b.id), 2 * MiB);
    const other = await attachNew(fx, SMALL);
    await rejectsWith(fx.driver.imageSize(created.id, other.id), "NOT_FOUND", "not a member");
  },
);

conformanceCase(
  "readImage() reads the device's content at take; OUT_OF_RANGE past the end",
  [],
  async (fx) => {
    const content = randomBytes(SMALL, 21);
    const device = await attachNew(fx, SMALL, content);
    const taken = await takeNew(fx, [device]);
    const image = await readWholeImage(fx, taken.id, device.id, SMALL);
    assertSameBytes(image, content, "image");
    const tail = new Uint8Array(4 * KiB);
    await fx.driver.readImage(taken.id, device.id, SMALL - tail.length, tail);
    assertSameBytes(tail, content.subarray(SMALL - tail.length), "the last 4 KiB");
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, SMALL - 512, new Uint8Array(1024)),
      "OUT_OF_RANGE",
      "a read crossing the end",
    );
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, SMALL, new Uint8Array(512)),
      "OUT_OF_RANGE",
      "a read starting at the end",
    );
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, -512, new Uint8Array(512)),
      "INVALID_ARGUMENT",
      "a negative offset",
    );
  },
);

conformanceCase(
  "image reads equal the device at take while the device is written",
  ["data"],
  async (fx) => {
    const size = 2 * MiB;
    const content = randomBytes(size, 31);
    const device = await attachNew(fx, size, content);
    const early = randomBytes(64 * KiB, 32);
    await fx.writeDevice(device, 128 * KiB, early);
    const atTake = content.slice();
    atTake.set(early, 128 * KiB);
    const taken = await takeNew(fx, [device]);
    const expected = atTake.slice();
    const writer = async (region: number, seed: number) => {
      const regionBytes = size / 2;
      for (let i = 0; i < 24; i++) {
        const data = randomBytes(4 * KiB * (1 + ((seed + i) % 16)), seed * 100 + i);
        const offset = region * regionBytes +
          4 * KiB * ((seed * 7 + i * 13) % ((regionBytes - data.length) / (4 * KiB)));
        await fx.writeDevice(device, offset, data);
        expected.set(data, offset);
      }
    };
    const [image] = await Promise.all([
      readWholeImage(fx, taken.id, device.id, size, 32 * KiB),
      writer(0, 1),
      writer(1, 2),
    ]);
    assertSameBytes(image, atTake, "image read while writing");
    assertSameBytes(await fx.readDevice(device, 0, size), expected, "the device kept every write");
    const again = await readWholeImage(fx, taken.id, device.id, size);
    assertSameBytes(again, atTake, "image read after the writes");
  },
);

// ---- events ----

conformanceCase(
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
  },
);

conformanceCase(
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

// ---- teardown ----

conformanceCase(
  "destroySnapshot() while image reads are in flight ends them cleanly",
  ["destroy-while-reading"],
  async (fx) => {
    const size = 2 * MiB;
    const content = randomBytes(size, 51);
    const device = await attachNew(fx, size, content);
    const taken = await takeNew(fx, [device]);
    const piece = 64 * KiB;
    let completed = 0;
    let destroyed = false;
    let enough: () => void = () => {};
    const started = new Promise<void>((resolve) => enough = resolve);
    const reader = async (first: number) => {
      for (let i = first; !destroyed; i++) {
        const offset = (i * piece) % size;
        const into = new Uint8Array(piece);
        try {
          await fx.driver.readImage(taken.id, device.id, offset, into);
        } catch (error) {
          assert.ok(isServiceError(error), `a read failed with ${error}, not a ServiceError`);
          assert.ok(
            ["NOT_FOUND", "UNAVAILABLE", "IO"].includes(error.code),
            `a read failed with ${error.code}: ${error.message}`,
          );
          return;
        }
        assertSameBytes(into, content.subarray(offset, offset + piece), `image at ${offset}`);
        if (++completed === 8) enough();
      }
    };
    const readers = [0, 8, 16, 24].map(reader);
    await Promise.race([started, Promise.all(readers)]);
    assert.ok(completed >= 8, "reads were running before destroy");
    await fx.driver.destroySnapshot(taken.id);
    destroyed = true;
    await Promise.all(readers);
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, 0, new Uint8Array(piece)),
      "NOT_FOUND",
      "a read after destroy",
    );
    assert.deepEqual(await fx.driver.listSnapshots(), []);
    assertSameBytes(await fx.readDevice(device, 0, size), content, "the device");
  },
);

conformanceCase("detach() after destroySnapshot() succeeds", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const taken = await takeNew(fx, [device]);
  await fx.driver.destroySnapshot(taken.id);
  await fx.driver.detach(device.id);
  assert.deepEqual(await fx.driver.listDevices(), []);
  await rejectsWith(fx.driver.getDevice(device.id), "NOT_FOUND", "getDevice after detach");
});

conformanceCase(
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
