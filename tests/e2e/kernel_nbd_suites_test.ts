/**
 * The NBD suites against kernel-backed image exports on the real module: the service runs
 * `--backend kernel` with its NBD listener on 127.0.0.1:10809, partition 1 of the scratch disk
 * is the origin, and the protocol checks of tests/nbd (tests/_helpers/nbd_image_checks.ts, the
 * same checks tests/kernel runs on the fake kernel) run against the export of a second
 * snapshot's image, compared with the image device the module made and the API's changes.
 *
 * - Locators: the image's locator is its export's URI, the /dev node is in `imageDevicePath`.
 * - Handshake, list and info; structured reads; block status of `base:allocation` and
 *   `qemu:dirty-bitmap:cbt`; multi-conn (pipelined reads on four connections, nbdcopy with
 *   four); bad requests get their NBD errors; a writable snapshot's export takes writes.
 * - Change tokens: the export lists `blksnap:change-token:` and `blksnap:previous-change-token:`,
 *   and the README's nbdinfo recipe trusts the dirty bitmap only for the kept token.
 * - Destroy: a connected client's reads finish or get ESHUTDOWN, later ones ESHUTDOWN, then the
 *   service closes the connection; the kernel's NBD client on the export fails its I/O instead
 *   of hanging.
 */

import assert from "node:assert/strict";
import { checkEndAcrossDestroy } from "../_helpers/export_end.ts";
import {
  checkBadRequests,
  checkBlockStatus,
  checkListAndInfo,
  checkMultiConn,
  checkStructuredReads,
  checkWrites,
  type ImageExportTarget,
} from "../_helpers/nbd_image_checks.ts";
import { dirtyRanges, runRecipe } from "../_helpers/token_recipes.ts";
import type { BlksnapClient } from "../../src/client/mod.ts";
import type { SnapshotImageInfo } from "../../src/driver.ts";
import { assertSameBytes, randomBytes, readAt, writeAt } from "./_helpers/block_io.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labTest } from "./_helpers/guest.ts";
import { kernelService } from "./_helpers/kernel_service.ts";
import { connectNbd } from "./_helpers/nbd.ts";
import { imageDeviceOf, presentProfile } from "./_helpers/module.ts";
import { originBytes, scratchPartitions } from "./_helpers/scratch.ts";
import { run } from "./_helpers/sh.ts";
import { mountTmpfs } from "./_helpers/tmpfs.ts";

const MiB = 1024 * 1024;
const NBD_PORT = 10809;

/** The origin with data, a first snapshot (its token kept), writes, and a second one taken. */
async function secondImage(
  stack: AsyncDisposableStack,
  options: { writable: boolean },
): Promise<{
  client: BlksnapClient;
  target: ImageExportTarget;
  image: SnapshotImageInfo;
  kept: string;
  origin: string;
  snapshotId: string;
  scratch: string;
}> {
  // The storage's tmpfs first: it unmounts after the service has destroyed the snapshots.
  const scratch = (await mountTmpfs(stack, { sizeBytes: 192 * MiB })).dir;
  const { client } = await kernelService(stack);
  const { origin } = await scratchPartitions();
  await writeAt(origin, 0, randomBytes(4 * MiB));
  const device = await client.devices.attach({ path: origin, name: "origin" });
  const storage = { path: `${scratch}/suite.diff`, limitBytes: 64 * MiB };
  const first = await client.snapshots.create({ devices: [device.id], diffStorage: storage });
  const kept = (await client.snapshots.take(first.id)).devices[0].changeToken!;
  await client.snapshots.destroy(first.id);
  await writeAt(origin, 3 * MiB + 4096, randomBytes(200 * 1024));
  await writeAt(origin, 40 * MiB, randomBytes(MiB));
  await writeAt(origin, originBytes - 4096, randomBytes(4096));
  const second = await client.snapshots.create({
    devices: [device.id],
    diffStorage: storage,
    writable: options.writable,
  });
  const [image] = (await client.snapshots.take(second.id)).devices;
  const imagePath = image.imageDevicePath!;
  const changes = await client.images.changes(second.id, device.id);
  return {
    client,
    image,
    kept,
    origin,
    snapshotId: second.id,
    scratch,
    target: {
      port: NBD_PORT,
      name: `${device.id}@${second.id}`,
      sizeBytes: originBytes,
      writable: options.writable,
      bytes: (offset, length) => readAt(imagePath, offset, length),
      dirty: changes.extents,
    },
  };
}

labTest({
  name:
    "kernel NBD suites on a read-only image export: locator, handshake, structured reads, block status, multi-conn, bad requests",
  requires: ["service", "module"],
  async fn(t) {
    await withCleanup(async (stack) => {
      const { client, target, image, snapshotId, scratch } = await secondImage(stack, {
        writable: false,
      });
      await t.step(
        "the locator is the export's URI, imageDevicePath the image device",
        async () => {
          const { origin } = await scratchPartitions();
          assert.equal(image.locator, `nbd://127.0.0.1:${NBD_PORT}/${target.name}`);
          assert.equal(image.imageDevicePath, imageDeviceOf(presentProfile()!, origin));
          const located = await client.images.locator(snapshotId, image.deviceId);
          assert.equal(located.locator, image.locator);
          assert.equal(located.imageDevicePath, image.imageDevicePath);
        },
      );
      await t.step("handshake, list and info", () => checkListAndInfo(target));
      await t.step("structured reads", () => checkStructuredReads(target));
      await t.step("block status: base:allocation and qemu:dirty-bitmap:cbt", () => {
        assert.ok(target.dirty.length >= 3, JSON.stringify(target.dirty));
        return checkBlockStatus(target);
      });
      await t.step("multi-conn and pipelined reads", () => checkMultiConn(target, scratch));
      await t.step("bad requests get NBD errors", () => checkBadRequests(target));
    });
  },
});

labTest({
  name: "kernel NBD suites on a writable snapshot's export: writes, bad requests; the origin stays",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      const { target, origin } = await secondImage(stack, { writable: true });
      const before = await readAt(origin, 8 * MiB, 3 * 65536);
      await checkBadRequests(target);
      await checkWrites(target, 8 * MiB);
      assertSameBytes(await readAt(origin, 8 * MiB, 3 * 65536), before, "the origin");
    });
  },
});

labTest({
  name:
    "kernel image export names its change tokens; the README's nbdinfo recipe trusts only the kept token",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      const { client, image, kept, snapshotId } = await secondImage(stack, { writable: false });
      assert.equal(image.previousChangeToken, kept);
      const listed = JSON.parse((await run("nbdinfo", ["--json", image.locator!])).stdout) as {
        exports: Array<{ contexts: string[] }>;
      };
      assert.deepEqual(listed.exports[0].contexts, [
        "base:allocation",
        "qemu:dirty-bitmap:cbt",
        "blksnap:change-number",
        `blksnap:change-token:${image.changeToken}`,
        `blksnap:previous-change-token:${kept}`,
      ]);
      const changes = await client.images.changes(snapshotId, image.deviceId, { since: kept });
      const trusted = await runRecipe("nbdinfo", { IMAGE: image.locator!, KEPT: kept });
      assert.equal(
        dirtyRanges("nbdinfo", trusted),
        changes.extents.map((e) => `${e.offset} ${e.length}`).join("\n"),
      );
      const stranger = await runRecipe("nbdinfo", {
        IMAGE: image.locator!,
        KEPT: image.changeToken!,
      });
      assert.equal(stranger.trim(), "full backup required");
    });
  },
});

labTest({
  name:
    "kernel image export ends at destroy: ESHUTDOWN, then the service closes the connection; /dev/nbd0 on it fails I/O instead of hanging",
  requires: ["service", "module"],
  async fn(t) {
    await withCleanup(async (stack) => {
      const { client, image, snapshotId, scratch } = await secondImage(stack, {
        writable: false,
      });
      await t.step("a connected client: ESHUTDOWN, then closed by the service", async () => {
        const seen = await checkEndAcrossDestroy(
          image.locator!,
          () => client.snapshots.destroy(snapshotId),
        );
        assert.ok(seen.refusedAfter >= 1, JSON.stringify(seen));
        assert.match(seen.closedWith, /server closed the connection/);
        const gone = await run("nbdinfo", ["--size", image.locator!], { allowFailure: true });
        assert.notEqual(gone.code, 0, "new clients find no export");
      });
      await t.step("the kernel's NBD client on the image's export", async () => {
        const origin = (await client.devices.list())[0];
        const created = await client.snapshots.create({
          devices: [origin.id],
          diffStorage: { path: `${scratch}/end.diff`, limitBytes: 64 * MiB },
        });
        const [taken] = (await client.snapshots.take(created.id)).devices;
        const nbd = stack.use(await connectNbd("/dev/nbd0", taken.locator!));
        const dd = (label: string) =>
          run("timeout", [
            "90",
            "dd",
            "if=/dev/nbd0",
            "of=/dev/null",
            "bs=4096",
            "count=16",
            `skip=${label === "before" ? 0 : 1024}`,
            "iflag=direct",
          ], { allowFailure: true });
        assert.equal((await dd("before")).code, 0, "reads before destroy");
        await client.snapshots.destroy(created.id);
        const after = await dd("after");
        assert.notEqual(after.code, 124, "the read did not hang until the timeout");
        assert.notEqual(after.code, 0, `a read of a destroyed image fails: ${after.stderr}`);
        await nbd.disconnect();
      });
    });
  },
});
