/**
 * A clean restart of the userspace backend keeps what a backup client
 * relies on: the devices, each device's CBT (same generation, changes made
 * before the restart reported after it) and taken snapshots, whose images
 * read the same before and after (through the driver and over NBD) and keep
 * being protected by copy-on-write. A device that changed while the service
 * was stopped starts a new generation, and its snapshot is lost.
 */

import assert from "node:assert/strict";
import { Prng } from "../_helpers/prng.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";
import type { UserspaceDriver } from "../../src/userspace/userspace_driver.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

async function readImage(driver: UserspaceDriver, id: string, device: string, size: number) {
  const bytes = new Uint8Array(size);
  await driver.readImage(id, device, 0, bytes);
  return bytes;
}

/** Asserts equal bytes, naming the first difference (no huge diff for megabytes). */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, message: string): void {
  assert.equal(actual.length, expected.length, `${message}: length`);
  const at = actual.findIndex((byte, i) => byte !== expected[i]);
  assert.equal(at, -1, `${message}: first difference at byte ${at}`);
}

type Fixture = Awaited<ReturnType<typeof userspaceFixture>>;

/** Runs `before` on a driver made with `options`, stops it, then `after` on a second one with its result. */
async function acrossRestart<T>(
  options: Parameters<typeof userspaceFixture>[0],
  before: (first: Fixture) => Promise<T>,
  after: (second: Fixture, value: T) => Promise<void>,
): Promise<void> {
  const first = await userspaceFixture(options);
  let value: T;
  try {
    value = await before(first);
  } finally {
    await first.cleanup();
  }
  const second = await userspaceFixture(options);
  try {
    await after(second, value);
  } finally {
    await second.cleanup();
  }
}

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "userspace-restart-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a clean restart keeps devices, the CBT generation and changes, and taken snapshots", async () => {
  await withDir(async (dir) => {
    const origin = new Prng(3).bytes(2 * MiB);
    const first = await userspaceFixture({ dir, persist: true });
    let snapshotId: string;
    let before: { generationId: string; changesNumber: number; map: Uint8Array };
    let image: Uint8Array;
    let changeToken: string | undefined;
    try {
      const a = await first.driver.attach(await first.createDevice(2 * MiB, { content: origin }), {
        name: "a",
      });
      await first.driver.attach(await first.createDevice(256 * KiB), { name: "b" });
      const snapshot = await first.driver.createSnapshot({
        deviceIds: ["a"],
        diffStorage: { path: `${dir}/diff`, limitBytes: 1 << 26 },
      });
      snapshotId = snapshot.id;
      changeToken = (await first.driver.takeSnapshot(snapshotId)).devices[0].changeToken;
      assert.ok(changeToken, "a taken image has a change token");
      // Copy-on-write: these chunks are in memory, queued, when the service stops.
      await first.writeDevice(a, 0, new Uint8Array(4 * KiB).fill(9));
      await first.writeDevice(a, MiB, new Uint8Array(64 * KiB).fill(7));
      image = await readImage(first.driver, snapshotId, "a", 2 * MiB);
      assertSameBytes(image, origin, "the image is the origin at take");
      const info = await first.driver.cbtInfo("a");
      before = {
        ...info,
        map: await first.driver.readCbtMap("a", { offset: 0, length: info.blockCount }),
      };
    } finally {
      await first.cleanup();
    }

    const second = await userspaceFixture({ dir, persist: true });
    try {
      const devices = await second.driver.listDevices();
      assert.deepEqual(devices.map((d) => [d.id, d.state]), [["a", undefined], ["b", undefined]]);
      const info = await second.driver.cbtInfo("a");
      assert.equal(info.generationId, before.generationId, "same generation");
      assert.equal(info.changesNumber, before.changesNumber);
      assert.deepEqual(
        await second.driver.readCbtMap("a", { offset: 0, length: info.blockCount }),
        before.map,
      );
      const [restored] = await second.driver.listSnapshots();
      assert.equal(restored?.id, snapshotId);
      assert.equal(restored.state, "taken");
      assert.equal(restored.devices[0].changeToken, changeToken, "the same change token");
      assertSameBytes(
        await readImage(second.driver, snapshotId, "a", 2 * MiB),
        image,
        "the image after the restart",
      );
      const overNbd = await second.connect(restored.devices[0].locator!);
      assertSameBytes(await overNbd.pread(0, 2 * MiB), image, "the NBD image export too");

      const a = devices[0];
      await second.writeDevice(a, 512 * KiB, new Uint8Array(8 * KiB).fill(5));
      assertSameBytes(
        await readImage(second.driver, snapshotId, "a", 2 * MiB),
        origin,
        "copy-on-write goes on after the restart",
      );
      await second.driver.destroySnapshot(snapshotId);
      await assert.rejects(Deno.stat(`${dir}/diff`), Deno.errors.NotFound);
      const next = await second.driver.createSnapshot({
        deviceIds: ["a"],
        diffStorage: { path: `${dir}/diff2`, limitBytes: 1 << 26 },
      });
      await second.driver.takeSnapshot(next.id);
      const after = await second.driver.cbtInfo("a");
      assert.equal(after.changesNumber, before.changesNumber + 1);
      const map = await second.driver.readCbtMap("a", { offset: 0, length: 32 });
      const changed = [...map.keys()].filter((block) => map[block] >= after.changesNumber);
      assert.deepEqual(changed, [0, 8, 16], "writes from both sides of the restart");
    } finally {
      await second.cleanup();
    }
  });
});

Deno.test("destroySnapshotsOnClose destroys snapshots at close and removes their storage", async () => {
  await withDir(async (dir) => {
    await acrossRestart(
      { dir, persist: true, driver: { destroySnapshotsOnClose: true } },
      async (first) => {
        await first.driver.attach(await first.createDevice(MiB), { name: "a" });
        const { id } = await first.driver.createSnapshot({
          deviceIds: ["a"],
          diffStorage: { path: `${dir}/diff`, limitBytes: 1 << 26 },
        });
        await first.driver.takeSnapshot(id);
        return (await first.driver.cbtInfo("a")).generationId;
      },
      async (second, generationId) => {
        await assert.rejects(Deno.stat(`${dir}/diff`), Deno.errors.NotFound);
        assert.deepEqual(await second.driver.listSnapshots(), []);
        assert.equal((await second.driver.cbtInfo("a")).generationId, generationId, "CBT kept");
      },
    );
  });
});

Deno.test("with cbtPersistence false a restart starts a new CBT generation", async () => {
  await withDir(async (dir) => {
    await acrossRestart(
      { dir, persist: true, driver: { cbtPersistence: false } },
      async (first) => {
        await first.driver.attach(await first.createDevice(MiB), { name: "a" });
        return (await first.driver.cbtInfo("a")).generationId;
      },
      async (second, generationId) => {
        await assert.rejects(Deno.stat(`${dir}/state/cbt/a.cbt`), Deno.errors.NotFound);
        const info = await second.driver.cbtInfo("a");
        assert.notEqual(info.generationId, generationId);
        assert.equal(info.changesNumber, 0);
      },
    );
  });
});

for (
  const [what, change] of [
    ["written while stopped", async (path: string) => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const file = await Deno.open(path, { write: true });
      await file.write(new Uint8Array(512).fill(1));
      file.close();
    }],
    ["resized while stopped", (path: string) => Deno.truncate(path, 2 * MiB)],
    ["whose CBT record is torn", async (_path: string, dir: string) => {
      const record = await Deno.open(`${dir}/state/cbt/a.cbt`, { write: true });
      await record.write(new Uint8Array(8192).fill(0xee));
      record.close();
    }],
  ] as const
) {
  Deno.test(`a device ${what} starts a new CBT generation and loses its snapshot`, async () => {
    await withDir(async (dir) => {
      const first = await userspaceFixture({ dir, persist: true });
      let generationId: string;
      let path: string;
      try {
        path = await first.createDevice(MiB);
        await first.driver.attach(path, { name: "a" });
        const { id } = await first.driver.createSnapshot({
          deviceIds: ["a"],
          diffStorage: { path: `${dir}/diff`, limitBytes: 1 << 26 },
        });
        await first.driver.takeSnapshot(id);
        generationId = (await first.driver.cbtInfo("a")).generationId;
      } finally {
        await first.cleanup();
      }
      await change(path, dir);
      const logged: string[] = [];
      const second = await userspaceFixture({
        dir,
        persist: true,
        driver: { logger: (_level, message) => logged.push(message) },
      });
      try {
        const info = await second.driver.cbtInfo("a");
        assert.notEqual(info.generationId, generationId);
        assert.equal(info.changesNumber, 0);
        assert.deepEqual(await second.driver.listSnapshots(), []);
        await assert.rejects(Deno.stat(`${dir}/diff`), Deno.errors.NotFound, "storage removed");
        assert.ok(logged.some((m) => /a: new CBT generation/.test(m)), logged.join("\n"));
        assert.ok(logged.some((m) => /is lost/.test(m)), logged.join("\n"));
      } finally {
        await second.cleanup();
      }
    });
  });
}

Deno.test("a corrupted snapshot stays corrupted across a clean restart", async () => {
  await withDir(async (dir) => {
    const engineParams = {
      trackingBlockMinimumShift: 16,
      chunkMinimumShift: 16,
      chunkMaximumInQueue: 0,
      diffStorageMinimumSectors: 512,
    };
    const first = await userspaceFixture({ dir, persist: true, engineParams });
    let id: string;
    try {
      const a = await first.driver.attach(await first.createDevice(2 * MiB), { name: "a" });
      ({ id } = await first.driver.createSnapshot({
        deviceIds: ["a"],
        diffStorage: { path: `${dir}/diff`, limitBytes: 256 * KiB },
      }));
      await first.driver.takeSnapshot(id);
      for (let offset = 0; offset < 2 * MiB; offset += 64 * KiB) {
        await first.writeDevice(a, offset, new Uint8Array(512).fill(3));
      }
      const info = await first.driver.snapshotInfo(id);
      assert.equal(info.state, "corrupted");
      assert.equal(info.devices[0].errorCode, 28);
    } finally {
      await first.cleanup();
    }
    const second = await userspaceFixture({ dir, persist: true, engineParams });
    try {
      const info = await second.driver.snapshotInfo(id);
      assert.equal(info.state, "corrupted");
      assert.deepEqual([info.devices[0].errorCode, info.devices[0].errorName], [28, "ENOSPC"]);
      await assert.rejects(readImage(second.driver, id, "a", 4096));
    } finally {
      await second.cleanup();
    }
  });
});

Deno.test("writes to a writable image survive a clean restart", async () => {
  await withDir(async (dir) => {
    const origin = new Prng(5).bytes(MiB);
    const first = await userspaceFixture({ dir, persist: true });
    let id: string;
    let expected: Uint8Array;
    try {
      await first.driver.attach(await first.createDevice(MiB, { content: origin }), { name: "a" });
      ({ id } = await first.driver.createSnapshot({
        deviceIds: ["a"],
        diffStorage: { path: `${dir}/diff`, limitBytes: 1 << 26 },
        writable: true,
      }));
      const taken = await first.driver.takeSnapshot(id);
      const image = await first.connect(taken.devices[0].locator!);
      const data = new Uint8Array(12 * KiB).fill(0xab);
      await image.pwrite(300 * KiB, data);
      expected = origin.slice();
      expected.set(data, 300 * KiB);
      assertSameBytes(await readImage(first.driver, id, "a", MiB), expected, "before");
    } finally {
      await first.cleanup();
    }
    const second = await userspaceFixture({ dir, persist: true });
    try {
      assert.equal((await second.driver.snapshotInfo(id)).writable, true);
      assertSameBytes(await readImage(second.driver, id, "a", MiB), expected, "after");
      const device = await second.connect((await second.driver.getDevice("a")).locator);
      assertSameBytes(await device.pread(0, MiB), origin, "the origin never saw image writes");
    } finally {
      await second.cleanup();
    }
  });
});
