/**
 * KernelDriver against the fake kernel, for both profiles: devices, CBT and
 * the snapshot sequence (attach, create, add, take, info, collect, images,
 * destroy, detach). The fake decodes the driver's real ioctl arguments.
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import {
  BDEVFILTER_ATTACH,
  BDEVFILTER_CTL,
  BLKFILTER_ATTACH,
  BLKFILTER_CTL,
  BlkfilterCtlBlksnap as Cmd,
} from "../../src/kernel/abi.ts";
import { kernelFixture } from "../_helpers/kernel_fixture.ts";
import { cString, libc, Sys } from "../../src/nbd/worker/libc.ts";

const PROFILES = ["upstream", "outoftree"] as const;

function code(expected: string) {
  return (error: unknown) => {
    assert.ok(isServiceError(error), `not a ServiceError: ${error}`);
    assert.equal(error.code, expected, error.message);
    return true;
  };
}

for (const profile of PROFILES) {
  const attachRequest = profile === "upstream" ? BLKFILTER_ATTACH : BDEVFILTER_ATTACH;
  const ctlRequest = profile === "upstream" ? BLKFILTER_CTL : BDEVFILTER_CTL;
  const imageName = (minor: number) =>
    profile === "upstream" ? `blksnap-7-${minor}` : `veeamblksnapimg_7:${minor}`;

  Deno.test(`[${profile}] version reports the kernel backend, profile and module version`, async () => {
    const fx = await kernelFixture(profile, { version: [7, 0, 2, 0] });
    try {
      const driver = await fx.driver();
      const version = await driver.version();
      assert.equal(version.backend, "kernel");
      assert.equal(version.profile, profile);
      assert.equal(version.moduleVersion, "7.0.2.0");
      assert.ok(version.capabilities.includes("cbt"));
      assert.ok(version.capabilities.includes("events"));
      assert.ok(!version.capabilities.includes("nbd-exports"));
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] attach tracks a block device under its base name`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const [vdb] = fx.devices;
      const info = await driver.attach(vdb.path);
      assert.deepEqual(info, {
        id: "vdb",
        path: vdb.path,
        capacityBytes: vdb.content.length,
        snapshotId: undefined,
        locator: vdb.path,
      });
      assert.ok(fx.fake.isTracked(vdb.path));
      const call = fx.fake.calls.find((c) => c.request === attachRequest);
      assert.equal(call?.device, vdb.path, "the filter request named the device");
      assert.deepEqual((await driver.listDevices()).map((d) => d.id), ["vdb"]);
      assert.equal((await driver.getDevice("vdb")).path, vdb.path);
      const named = await driver.attach(fx.devices[1].path, { name: "data" });
      assert.equal(named.id, "data");
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] attach refuses duplicates, missing paths and non-block files`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const [vdb, vdc] = fx.devices;
      await driver.attach(vdb.path);
      await assert.rejects(driver.attach(vdb.path, { name: "other" }), code("CONFLICT"));
      await assert.rejects(driver.attach(vdc.path, { name: "vdb" }), code("CONFLICT"));
      await assert.rejects(driver.attach(`${fx.dir}/missing`), code("NOT_FOUND"));
      await Deno.writeTextFile(`${fx.dir}/plain`, "not a disk");
      await assert.rejects(driver.attach(`${fx.dir}/plain`), code("INVALID_ARGUMENT"));
      await assert.rejects(driver.attach("relative/vdc"), code("INVALID_ARGUMENT"));
      await assert.rejects(driver.attach(vdc.path, { name: "bad/name" }), code("INVALID_ARGUMENT"));
      const alias = `${fx.dir}/disk-by-id-vdb`;
      await Deno.writeFile(alias, vdb.content);
      fx.fake.addBlockDevice(alias, { major: 7, minor: 1 });
      await assert.rejects(driver.attach(alias), code("CONFLICT"), "same device, other path");
      fx.fake.setForeignFilter(vdc.path);
      await assert.rejects(driver.attach(vdc.path), code("CONFLICT"));
      await assert.rejects(driver.getDevice("vdc"), code("NOT_FOUND"));
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] CBT info follows writes and takes`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const [vdb] = fx.devices;
      await driver.attach(vdb.path);
      const first = await driver.cbtInfo("vdb");
      assert.equal(first.capacityBytes, vdb.content.length);
      assert.equal(first.blockSizeBytes, 65536);
      assert.equal(first.blockCount, 17);
      assert.equal(first.changesNumber, 0);
      fx.fake.writeDevice(vdb.path, 3 * 65536 + 10, new Uint8Array(100).fill(1));
      const snapshot = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff1`, limitBytes: 1 << 30 },
      });
      await driver.takeSnapshot(snapshot.id);
      const after = await driver.cbtInfo("vdb");
      assert.equal(after.changesNumber, 1);
      assert.equal(after.generationId, first.generationId);
      const map = await driver.readCbtMap("vdb", { offset: 0, length: after.blockCount });
      assert.deepEqual([...map.keys()].filter((i) => map[i] === 1), [3]);
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] the CBT map is read in pieces and range-checked`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver({ cbtMapPieceBytes: 4 });
      const [vdb] = fx.devices;
      await driver.attach(vdb.path);
      for (const block of [0, 5, 16]) {
        fx.fake.writeDevice(vdb.path, block * 65536, new Uint8Array(1));
      }
      const snapshot = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await driver.takeSnapshot(snapshot.id);
      const before = fx.fake.calls.length;
      const map = await driver.readCbtMap("vdb", { offset: 1, length: 16 });
      const pieces = fx.fake.calls.slice(before).filter((c) =>
        c.request === ctlRequest && c.cmd === Cmd.BLKFILTER_CTL_BLKSNAP_CBTMAP
      );
      assert.deepEqual(pieces.map((c) => c.mapLength), [4, 4, 4, 4]);
      assert.equal(map.length, 16);
      assert.deepEqual([...map.keys()].filter((i) => map[i] !== 0), [4, 15]);
      assert.deepEqual(await driver.readCbtMap("vdb", { offset: 17, length: 0 }), new Uint8Array());
      await assert.rejects(
        driver.readCbtMap("vdb", { offset: 10, length: 8 }),
        code("OUT_OF_RANGE"),
      );
      await assert.rejects(
        driver.readCbtMap("vdb", { offset: -1, length: 1 }),
        code("INVALID_ARGUMENT"),
      );
      await assert.rejects(driver.readCbtMap("nope", { offset: 0, length: 1 }), code("NOT_FOUND"));
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] markDirty marks every range in both tables`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const [vdb] = fx.devices;
      await driver.attach(vdb.path);
      const snapshot = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      await driver.takeSnapshot(snapshot.id);
      const before = fx.fake.calls.length;
      await driver.markDirty("vdb", [
        { offsetSectors: 0, countSectors: 1 },
        { offsetSectors: 128 * 9, countSectors: 256 },
      ]);
      const dirtyCalls = fx.fake.calls.slice(before).filter((c) =>
        c.cmd === Cmd.BLKFILTER_CTL_BLKSNAP_CBTDIRTY
      );
      assert.deepEqual(
        dirtyCalls.map((c) => c.dirtyCount),
        profile === "upstream" ? [1, 1] : [2],
      );
      const map = await driver.readCbtMap("vdb", { offset: 0, length: 17 });
      assert.deepEqual([...map.keys()].filter((i) => map[i] !== 0), [0, 9, 10]);
      const capacitySectors = vdb.content.length / 512;
      await assert.rejects(
        driver.markDirty("vdb", [{ offsetSectors: capacitySectors - 1, countSectors: 2 }]),
        code("OUT_OF_RANGE"),
      );
      await assert.rejects(
        driver.markDirty("vdb", [{ offsetSectors: 0, countSectors: 0 }]),
        code("INVALID_ARGUMENT"),
      );
      await driver.markDirty("vdb", []);
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] a snapshot's images read as the devices were at take time`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const [vdb, vdc] = fx.devices;
      await driver.attach(vdb.path);
      await driver.attach(vdc.path);
      const storage = `${fx.dir}/diff-storage`;
      const created = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: storage, limitBytes: 64 * 1024 * 1024 + 100 },
      });
      assert.equal(created.state, "created");
      assert.deepEqual(created.devices, [{
        deviceId: "vdb",
        locator: undefined,
        errorCode: 0,
        errorName: undefined,
      }]);
      assert.ok((await Deno.stat(storage)).isFile, "a missing storage file is created");
      const added = await driver.addDevice(created.id, "vdc");
      assert.deepEqual(added.devices.map((d) => d.deviceId), ["vdb", "vdc"]);
      assert.equal((await driver.getDevice("vdc")).snapshotId, created.id);
      const taken = await driver.takeSnapshot(created.id);
      assert.equal(taken.state, "taken");
      assert.ok(taken.takenAt);
      assert.deepEqual(taken.devices.map((d) => d.locator), [
        `${fx.dir}/${imageName(1)}`,
        `${fx.dir}/${imageName(2)}`,
      ]);
      fx.fake.writeDevice(vdb.path, 0, new Uint8Array(8192).fill(0xee));
      assert.equal(await driver.imageSize(created.id, "vdb"), vdb.content.length);
      const head = new Uint8Array(8192);
      await driver.readImage(created.id, "vdb", 0, head);
      assert.deepEqual(head, vdb.content.subarray(0, 8192));
      const tail = new Uint8Array(5000);
      await driver.readImage(created.id, "vdc", vdc.content.length - 5000, tail);
      assert.deepEqual(tail, vdc.content.subarray(vdc.content.length - 5000));
      await assert.rejects(
        driver.readImage(created.id, "vdc", vdc.content.length - 10, new Uint8Array(11)),
        code("OUT_OF_RANGE"),
      );
      const listed = await driver.listSnapshots();
      assert.deepEqual(listed.map((s) => [s.id, s.state]), [[created.id, "taken"]]);
      await driver.destroySnapshot(created.id);
      await assert.rejects(driver.snapshotInfo(created.id), code("NOT_FOUND"));
      await assert.rejects(Deno.stat(`${fx.dir}/${imageName(1)}`), Deno.errors.NotFound);
      await assert.rejects(Deno.stat(storage), Deno.errors.NotFound, "the driver's file is gone");
      assert.deepEqual(await driver.listSnapshots(), []);
      assert.equal((await driver.getDevice("vdb")).snapshotId, undefined);
      await driver.detach("vdb");
      assert.ok(!fx.fake.isTracked(vdb.path));
      await assert.rejects(driver.getDevice("vdb"), code("NOT_FOUND"));
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] difference storage may be a directory or a block device`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      await driver.attach(fx.devices[0].path);
      const dir = `${fx.dir}/storage-dir`;
      await Deno.mkdir(dir);
      const inDir = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: dir, limitBytes: 1 << 30 },
      });
      await driver.destroySnapshot(inDir.id);
      assert.ok((await Deno.stat(dir)).isDirectory, "a given directory is left alone");
      const blockPath = `${fx.dir}/storage-disk`;
      await Deno.writeFile(blockPath, new Uint8Array(4096));
      fx.fake.addBlockDevice(blockPath, { major: 8, minor: 16, capacityBytes: 1 << 30 });
      const onDisk = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: blockPath, limitBytes: 1 << 30 },
      });
      await driver.destroySnapshot(onDisk.id);
      assert.ok((await Deno.stat(blockPath)).isFile, "a given storage is not removed");
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] snapshot state conflicts are refused`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const [vdb, vdc] = fx.devices;
      await driver.attach(vdb.path);
      await driver.attach(vdc.path);
      const diffStorage = { path: `${fx.dir}/diff`, limitBytes: 1 << 30 };
      const empty = await driver.createSnapshot({ deviceIds: [], diffStorage });
      await assert.rejects(driver.takeSnapshot(empty.id), code("CONFLICT"));
      const one = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff2`, limitBytes: 1 << 30 },
      });
      await assert.rejects(driver.addDevice(empty.id, "vdb"), code("CONFLICT"));
      await assert.rejects(driver.addDevice(one.id, "vdb"), code("CONFLICT"));
      await assert.rejects(
        driver.createSnapshot({ deviceIds: ["vdb"], diffStorage }),
        code("CONFLICT"),
      );
      await assert.rejects(driver.detach("vdb"), code("CONFLICT"));
      await driver.takeSnapshot(one.id);
      await assert.rejects(driver.takeSnapshot(one.id), code("CONFLICT"));
      await assert.rejects(driver.addDevice(one.id, "vdc"), code("CONFLICT"));
      await assert.rejects(driver.imageSize(empty.id, "vdc"), code("NOT_FOUND"));
      await driver.addDevice(empty.id, "vdc");
      await assert.rejects(driver.imageSize(empty.id, "vdc"), code("CONFLICT"));
      await assert.rejects(
        driver.createSnapshot({ deviceIds: ["nope"], diffStorage }),
        code("NOT_FOUND"),
      );
      await assert.rejects(
        driver.createSnapshot({ deviceIds: [], diffStorage: { path: "rel", limitBytes: 1 } }),
        code("INVALID_ARGUMENT"),
      );
      await assert.rejects(driver.snapshotInfo("not-a-uuid"), code("NOT_FOUND"));
      await assert.rejects(driver.destroySnapshot(crypto.randomUUID()), code("NOT_FOUND"));
    } finally {
      await fx.cleanup();
    }
  });

  Deno.test(`[${profile}] listSnapshots sees every snapshot, also past the first array`, async () => {
    const fx = await kernelFixture(profile);
    try {
      const driver = await fx.driver();
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const created = await driver.createSnapshot({
          deviceIds: [],
          diffStorage: { path: `${fx.dir}/diff${i}`, limitBytes: 1 << 20 },
        });
        ids.push(created.id);
      }
      const listed = await driver.listSnapshots();
      assert.deepEqual(listed.map((s) => s.id).sort(), [...ids].sort());
      assert.ok(listed.every((s) => s.state === "created" && s.devices.length === 0));
    } finally {
      await fx.cleanup();
    }
  });
}

Deno.test("a storage descriptor numbered like one of the fake's own is still the real storage", async () => {
  // The fake's descriptors once started at 100: in a process with about that many open (test
  // modules run on threads of one process), the storage's /proc/self/fd/N named one of the
  // fake's files instead, and SNAPSHOT_CREATE answered ENOENT.
  const fx = await kernelFixture("outoftree");
  const held: number[] = [];
  const c = libc();
  try {
    const driver = await fx.driver();
    const device = await driver.attach(fx.devices[0].path);
    for (let i = 0; i < 12; i++) {
      // The storage gets the lowest free number: make it 95 + i.
      for (const fd of held.splice(0)) c.close(fd);
      for (;;) {
        const fd = c.open(cString("/dev/null"), Sys.O_RDONLY | Sys.O_CLOEXEC, 0);
        assert.ok(fd >= 0);
        if (fd >= 95 + i) {
          c.close(fd);
          break;
        }
        held.push(fd);
      }
      const { id } = await driver.createSnapshot({
        deviceIds: [device.id],
        diffStorage: { path: `${fx.dir}/busy-${i}.diff`, limitBytes: 1 << 30 },
      });
      await driver.destroySnapshot(id);
    }
    await driver.close();
  } finally {
    for (const fd of held) c.close(fd);
    await fx.cleanup();
  }
});
