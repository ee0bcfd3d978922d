/**
 * `nbdinfo --list` against the userspace backend: every attached device and
 * every image of a taken snapshot is listed under its documented name
 * (`<device>` and `<device>@<snapshot-id>`) with its description, size,
 * read-only flag and CBT contexts; images come with take and go with destroy.
 */

import assert from "node:assert/strict";
import { type ListedExport, listExports, missingTools } from "./_helpers/nbd_tools.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";

const KiB = 1024;
const CONTEXTS = ["base:allocation", "qemu:dirty-bitmap:cbt", "blksnap:change-number"];
const ignore = missingTools("nbdinfo");

function byName(exports: ListedExport[]): Map<string, ListedExport> {
  return new Map(exports.map((e) => [e["export-name"], e]));
}

Deno.test({
  name: "nbdinfo --list shows each device and image export with its description",
  ignore: ignore !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const { driver } = fx;
      const port = driver.nbdServer.tcpPort!;
      const a = await driver.attach(await fx.createDevice(1028 * KiB), { name: "alpha" });
      const b = await driver.attach(await fx.createDevice(256 * KiB), { name: "beta" });
      const c = await driver.attach(await fx.createDevice(128 * KiB), { name: "scsi-0:0:0:1" });

      const devices = byName(await listExports(port));
      assert.deepEqual([...devices.keys()].sort(), ["alpha", "beta", "scsi-0:0:0:1"]);
      for (const device of [a, b, c]) {
        const listed = devices.get(device.id)!;
        assert.equal(listed.description, `tracked device ${device.id} (${device.path})`);
        assert.equal(listed["export-size"], device.capacityBytes);
        assert.equal(listed.is_read_only, false);
        assert.deepEqual(listed.contexts, CONTEXTS);
      }

      const storage = (name: string) => ({ path: `${fx.dir}/${name}`, limitBytes: 1 << 26 });
      const readOnly = await driver.createSnapshot({
        deviceIds: ["alpha"],
        diffStorage: storage("1"),
      });
      const writable = await driver.createSnapshot({
        deviceIds: ["beta"],
        diffStorage: storage("2"),
        writable: true,
      });
      const untaken = await driver.createSnapshot({
        deviceIds: ["scsi-0:0:0:1"],
        diffStorage: storage("3"),
      });
      await driver.takeSnapshot(readOnly.id);
      await driver.takeSnapshot(writable.id);

      const all = byName(await listExports(port));
      assert.equal(all.size, 5, `exports: ${[...all.keys()]}`);
      const alphaImage = all.get(`alpha@${readOnly.id}`)!;
      const [{ changeToken: alphaToken }] = (await driver.snapshotInfo(readOnly.id)).devices;
      assert.equal(
        alphaImage.description,
        `read-only image of alpha in snapshot ${readOnly.id}; change token ${alphaToken}`,
      );
      assert.equal(alphaImage.is_read_only, true);
      assert.equal(alphaImage["export-size"], a.capacityBytes);
      assert.deepEqual(alphaImage.contexts, [...CONTEXTS, `blksnap:change-token:${alphaToken}`]);
      assert.deepEqual(all.get("alpha")!.contexts, alphaImage.contexts, "the device's latest take");
      const betaImage = all.get(`beta@${writable.id}`)!;
      const [{ changeToken: betaToken }] = (await driver.snapshotInfo(writable.id)).devices;
      assert.equal(
        betaImage.description,
        `writable image of beta in snapshot ${writable.id}; change token ${betaToken}`,
      );
      assert.equal(betaImage.is_read_only, false);
      assert.equal(betaImage["export-size"], b.capacityBytes);
      assert.ok(
        !all.has(`scsi-0:0:0:1@${untaken.id}`),
        "a snapshot that is not taken has no image",
      );

      await driver.destroySnapshot(readOnly.id);
      const after = byName(await listExports(port));
      assert.deepEqual(
        [...after.keys()].sort(),
        ["alpha", "beta", `beta@${writable.id}`, "scsi-0:0:0:1"],
      );
    } finally {
      await fx.cleanup();
    }
  },
});
