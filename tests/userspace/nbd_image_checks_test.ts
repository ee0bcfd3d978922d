/**
 * The NBD protocol checks that the lab runs on kernel image exports
 * (tests/_helpers/nbd_image_checks.ts) against a userspace image export, so
 * both backends are held to the very same checks.
 */

import { readChanges } from "../../src/api/changes.ts";
import {
  checkBadRequests,
  checkBlockStatus,
  checkListAndInfo,
  checkMultiConn,
  checkStructuredReads,
  checkWrites,
  type ImageExportTarget,
} from "../_helpers/nbd_image_checks.ts";
import { pattern } from "../_helpers/nbd_fixture.ts";
import { missingTools } from "./_helpers/nbd_tools.ts";
import { type UserspaceFixture, userspaceFixture } from "./_helpers/userspace_fixture.ts";

const BLOCK = 64 * 1024;
const SIZE = 4 * 1024 * 1024;
const ignore = missingTools("nbdinfo", "nbdcopy") !== undefined;

/** A second snapshot of a 4 MiB device (blocks 2, 5-6 and the tail written since the first). */
async function withImage(
  options: { writable: boolean },
  body: (target: ImageExportTarget, fx: UserspaceFixture) => Promise<void>,
): Promise<void> {
  const fx = await userspaceFixture();
  try {
    const { driver } = fx;
    const device = await driver.attach(
      await fx.createDevice(SIZE, { content: pattern(SIZE / 2, 9) }),
      { name: "disk" },
    );
    const take = async () => {
      const created = await driver.createSnapshot({
        deviceIds: ["disk"],
        diffStorage: { path: await fx.storagePath(), limitBytes: 1 << 26 },
        writable: options.writable,
      });
      return (await driver.takeSnapshot(created.id)).id;
    };
    await driver.destroySnapshot(await take());
    await fx.writeDevice(device, 2 * BLOCK + 100, pattern(512, 1));
    await fx.writeDevice(device, 5 * BLOCK, pattern(2 * BLOCK, 2));
    await fx.writeDevice(device, SIZE - 512, pattern(512, 3));
    const id = await take();
    const [image] = (await driver.snapshotInfo(id)).devices;
    await body({
      port: driver.nbdServer.tcpPort!,
      name: `disk@${id}`,
      sizeBytes: SIZE,
      writable: options.writable,
      async bytes(offset, length) {
        const into = new Uint8Array(length);
        await driver.readImage(id, "disk", offset, into);
        return into;
      },
      dirty: (await readChanges(driver, image)).extents,
    }, fx);
  } finally {
    await fx.cleanup();
  }
}

Deno.test({
  name: "userspace image export: the NBD checks the lab runs on kernel exports (read-only)",
  ignore,
  async fn(t) {
    await withImage({ writable: false }, async (target, fx) => {
      await t.step("handshake, list and info", () => checkListAndInfo(target));
      await t.step("structured reads", () => checkStructuredReads(target));
      await t.step("block status", () => checkBlockStatus(target));
      await t.step("multi-conn", () => checkMultiConn(target, fx.dir));
      await t.step("bad requests", () => checkBadRequests(target));
    });
  },
});

Deno.test({
  name: "userspace image export: the NBD checks the lab runs on kernel exports (writable)",
  ignore,
  async fn() {
    await withImage({ writable: true }, async (target) => {
      await checkBadRequests(target);
      await checkWrites(target, 8 * BLOCK);
    });
  },
});
