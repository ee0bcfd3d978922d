/**
 * The kernel backend's images over NBD, on the fake kernel (a regular file
 * stands in for each image device) with the real clients: the image's
 * locator is its export's URI (the /dev path in `imageDevicePath`),
 * nbdcopy of it reads the image device's bytes, nbdinfo --map reads the CBT
 * contexts as the API's changes do, the export names its change tokens and
 * the README's token recipes work on it, a writable snapshot's export takes
 * writes (nbdsh), and at destroy the export ends: ESHUTDOWN on the open
 * connections until the server closes them, gone for new ones.
 */

import assert from "node:assert/strict";
import { readChanges } from "../../src/api/changes.ts";
import { KernelImageExports } from "../../src/kernel/image_exports.ts";
import type { KernelDriver } from "../../src/kernel/kernel_driver.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { type KernelFixture, kernelFixture } from "../_helpers/kernel_fixture.ts";
import { nbdsh, pattern, runTool, runToolOk, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { nbdTestWorkers } from "../_helpers/nbd_workers_mode.ts";
import { checkEndAcrossDestroy } from "../_helpers/export_end.ts";
import { dirtyRanges, runRecipe } from "../_helpers/token_recipes.ts";

const ignore = toolsMissing("nbdinfo", "nbdcopy", "nbdsh");
const BLOCK = 64 * 1024;

interface Scenario {
  fx: KernelFixture;
  driver: KernelDriver;
  uri: (name: string) => string;
  port: number;
}

async function withKernelExports(body: (scenario: Scenario) => Promise<void>): Promise<void> {
  const fx = await kernelFixture("upstream");
  const driver = await fx.driver();
  const exports = new KernelImageExports(driver);
  const server = await startNbdServer(exports, {
    tcp: { port: 0 },
    endedGraceMs: 1000,
    workers: nbdTestWorkers(),
  });
  driver.serveImagesAt((name) => `nbd://127.0.0.1:${server.tcpPort}/${name}`);
  try {
    await body({
      fx,
      driver,
      port: server.tcpPort!,
      uri: (name) => `nbd://127.0.0.1:${server.tcpPort}/${encodeURIComponent(name)}`,
    });
  } finally {
    await server.close();
    await exports.close();
    await fx.cleanup();
  }
}

async function takeVdb(
  { fx, driver }: Scenario,
  options: { writable?: boolean } = {},
): Promise<string> {
  const snapshot = await driver.createSnapshot({
    deviceIds: ["vdb"],
    diffStorage: { path: `${fx.dir}/diff-${crypto.randomUUID()}`, limitBytes: 1 << 30 },
    writable: options.writable,
  });
  await driver.takeSnapshot(snapshot.id);
  return snapshot.id;
}

interface MapExtent {
  offset: number;
  length: number;
  type: number;
}

async function map(uri: string, context: string): Promise<MapExtent[]> {
  const output = await runToolOk("nbdinfo", [`--map=${context}`, "--json", uri]);
  return (JSON.parse(output) as MapExtent[]).map(({ offset, length, type }) => ({
    offset,
    length,
    type,
  }));
}

Deno.test({
  name: "kernel images over NBD: nbdcopy equals the image device, with 4 connections",
  ignore,
  async fn() {
    await withKernelExports(async (scenario) => {
      const { fx, driver, uri, port } = scenario;
      const [vdb] = fx.devices;
      await driver.attach(vdb.path);
      const id = await takeVdb(scenario);
      fx.fake.writeDevice(vdb.path, 0, pattern(BLOCK, 9)); // after take: not in the image
      const list = JSON.parse(
        await runToolOk("nbdinfo", ["--list", "--json", `nbd://127.0.0.1:${port}`]),
      ) as { exports: Array<{ "export-name": string; "is_read_only": boolean }> };
      assert.deepEqual(list.exports.map((e) => [e["export-name"], e.is_read_only]), [
        [`vdb@${id}`, true],
      ]);
      const out = `${fx.dir}/copy.raw`;
      const [image] = (await driver.snapshotInfo(id)).devices;
      assert.equal(image.locator, `nbd://127.0.0.1:${port}/vdb@${id}`, "the export's URI");
      assert.equal(image.imageDevicePath, `${fx.dir}/blksnap-7-1`, "the image device");
      await runToolOk("nbdcopy", ["--connections=4", image.locator!, out]);
      assert.deepEqual(await Deno.readFile(out), await Deno.readFile(image.imageDevicePath!));
      assert.deepEqual(await Deno.readFile(out), vdb.content, "the device as it was at take");
      const info = await runToolOk("nbdinfo", ["--json", uri(`vdb@${id}`)]);
      const parsed = JSON.parse(info) as {
        protocol: string;
        exports: Array<{ can_multi_conn: boolean; contexts: string[] }>;
      };
      assert.equal(parsed.exports[0].can_multi_conn, true);
      assert.ok(image.changeToken);
      assert.equal(image.previousChangeToken, undefined, "the first take of the generation");
      assert.deepEqual(parsed.exports[0].contexts, [
        "base:allocation",
        "qemu:dirty-bitmap:cbt",
        "blksnap:change-number",
        `blksnap:change-token:${image.changeToken}`,
      ]);
    });
  },
});

Deno.test({
  name:
    "kernel images over NBD: qemu:dirty-bitmap:cbt equals the API's changes; change numbers per block",
  ignore,
  async fn() {
    await withKernelExports(async (scenario) => {
      const { fx, driver, uri } = scenario;
      const [vdb] = fx.devices;
      await driver.attach(vdb.path);
      fx.fake.writeDevice(vdb.path, 2 * BLOCK + 100, pattern(10, 1)); // number 1
      const first = await takeVdb(scenario);
      await driver.destroySnapshot(first);
      fx.fake.writeDevice(vdb.path, 5 * BLOCK, pattern(2 * BLOCK, 2)); // number 2
      fx.fake.writeDevice(vdb.path, vdb.content.length - 10, pattern(10, 3)); // the short tail
      const second = await takeVdb(scenario);
      const dirty = await map(uri(`vdb@${second}`), "qemu:dirty-bitmap:cbt");
      const changes = await readChanges(driver, (await driver.snapshotInfo(second)).devices[0]);
      assert.ok(changes.extents.length > 0);
      assert.deepEqual(
        dirty.filter((e) => e.type === 1).map(({ offset, length }) => ({ offset, length })),
        changes.extents,
      );
      assert.equal(dirty.reduce((sum, e) => sum + e.length, 0), vdb.content.length);
      const numbers = await map(uri(`vdb@${second}`), "blksnap:change-number");
      const numberAt = (offset: number) =>
        numbers.find((e) => e.offset <= offset && offset < e.offset + e.length)?.type;
      assert.equal(numberAt(0), 0);
      assert.equal(numberAt(2 * BLOCK), 1);
      assert.equal(numberAt(5 * BLOCK), 2);
      assert.equal(numberAt(6 * BLOCK + 5), 2);
      assert.equal(numberAt(vdb.content.length - 1), 2);
    });
  },
});

Deno.test({
  name: "kernel images over NBD: a writable snapshot's export takes writes; exports end at destroy",
  ignore,
  async fn() {
    await withKernelExports(async (scenario) => {
      const { fx, driver, uri } = scenario;
      const [vdb] = fx.devices;
      await driver.attach(vdb.path);
      const id = await takeVdb(scenario, { writable: true });
      const written = await nbdsh(
        uri(`vdb@${id}`),
        [
          "h.connect_uri(uri)",
          "assert not h.is_read_only()",
          "h.pwrite(b'\\xab' * 8192, 4096)",
          "h.flush()",
          "print(h.pread(4, 4096 + 8188).hex())",
        ].join("\n"),
      );
      assert.equal(written.trim(), "abababab");
      const back = new Uint8Array(8192);
      await driver.readImage(id, "vdb", 4096, back);
      assert.deepEqual(back, new Uint8Array(8192).fill(0xab));
      assert.deepEqual(
        (await Deno.readFile(vdb.path)).subarray(4096, 4096 + 8192),
        vdb.content.subarray(4096, 4096 + 8192),
        "the original device is untouched",
      );

      const readOnly = await takeOther(scenario);
      const refused = await runTool("nbdsh", [
        "-u",
        uri(`vdc@${readOnly}`),
        "-c",
        "h.pwrite(b'x', 0)",
      ]);
      assert.notEqual(refused.code, 0, "a read-only image refuses writes");

      await driver.destroySnapshot(id);
      const gone = await runTool("nbdinfo", ["--size", uri(`vdb@${id}`)]);
      assert.notEqual(gone.code, 0);
      assert.match(gone.stderr, /not present|unknown|export/i);
    });
  },
});

async function takeOther({ fx, driver }: Scenario): Promise<string> {
  const [, vdc] = fx.devices;
  await driver.attach(vdc.path);
  const snapshot = await driver.createSnapshot({
    deviceIds: ["vdc"],
    diffStorage: { path: `${fx.dir}/diff-vdc`, limitBytes: 1 << 30 },
  });
  await driver.takeSnapshot(snapshot.id);
  return snapshot.id;
}

Deno.test({
  name: "kernel images: without NBD the locator is the image device, also in imageDevicePath",
  async fn() {
    const fx = await kernelFixture("outoftree");
    try {
      const driver = await fx.driver();
      await driver.attach(fx.devices[0].path);
      const snapshot = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
      });
      assert.equal(snapshot.devices[0].imageDevicePath, undefined, "no image before take");
      const [image] = (await driver.takeSnapshot(snapshot.id)).devices;
      assert.equal(image.locator, `${fx.dir}/veeamblksnapimg_7:1`);
      assert.equal(image.imageDevicePath, image.locator);
      driver.serveImagesAt((name) => `nbd+unix:///${name}?socket=/run/x.sock`);
      const [served] = (await driver.snapshotInfo(snapshot.id)).devices;
      assert.equal(served.locator, `nbd+unix:///vdb@${snapshot.id}?socket=/run/x.sock`);
      assert.equal(served.imageDevicePath, image.locator);
      driver.serveImagesAt(undefined);
      assert.equal((await driver.snapshotInfo(snapshot.id)).devices[0].locator, image.locator);
    } finally {
      await fx.cleanup();
    }
  },
});

Deno.test({
  name:
    "kernel images over NBD: the export names its change tokens; the README recipes trust only the kept one",
  ignore,
  async fn() {
    await withKernelExports(async (scenario) => {
      const { fx, driver } = scenario;
      const [vdb] = fx.devices;
      await driver.attach(vdb.path);
      const first = await takeVdb(scenario);
      const kept = (await driver.snapshotInfo(first)).devices[0].changeToken!;
      await driver.destroySnapshot(first);
      for (const block of [1, 2, 6]) {
        fx.fake.writeDevice(vdb.path, block * BLOCK + 100, pattern(512, block));
      }
      const second = await takeVdb(scenario);
      const [image] = (await driver.snapshotInfo(second)).devices;
      assert.equal(image.previousChangeToken, kept);
      const listed = JSON.parse(await runToolOk("nbdinfo", ["--json", image.locator!])) as {
        exports: Array<{ contexts: string[]; description: string }>;
      };
      assert.deepEqual(listed.exports[0].contexts, [
        "base:allocation",
        "qemu:dirty-bitmap:cbt",
        "blksnap:change-number",
        `blksnap:change-token:${image.changeToken}`,
        `blksnap:previous-change-token:${kept}`,
      ]);
      assert.match(
        listed.exports[0].description,
        new RegExp(`dirty bitmap since change token ${kept}$`),
      );
      const changes = await readChanges(driver, image, { since: kept });
      const expected = changes.extents.map((e) => `${e.offset} ${e.length}`).join("\n");
      assert.equal(expected, `${BLOCK} ${2 * BLOCK}\n${6 * BLOCK} ${BLOCK}`, "blocks 1-2 and 6");
      for (const tool of ["nbdinfo", "nbdsh"] as const) {
        const trusted = await runRecipe(tool, { IMAGE: image.locator!, KEPT: kept });
        assert.equal(dirtyRanges(tool, trusted), expected, tool);
        const stranger = await runRecipe(tool, { IMAGE: image.locator!, KEPT: image.changeToken! });
        assert.equal(
          stranger.trim(),
          "full backup required",
          `${tool}: a token it is not relative to`,
        );
      }
    });
  },
});

Deno.test({
  name:
    "kernel images over NBD: at destroy in-flight reads finish or get ESHUTDOWN, later ones ESHUTDOWN, then the server closes the connection",
  ignore,
  async fn() {
    await withKernelExports(async (scenario) => {
      const { fx, driver } = scenario;
      await driver.attach(fx.devices[0].path);
      const id = await takeVdb(scenario);
      const { locator } = (await driver.snapshotInfo(id)).devices[0];
      const seen = await checkEndAcrossDestroy(locator!, () => driver.destroySnapshot(id));
      assert.equal(seen.completed + seen.failed, 8);
      assert.ok(seen.refusedAfter >= 1, JSON.stringify(seen));
      assert.match(seen.closedWith, /server closed the connection/);
      const gone = await runTool("nbdinfo", ["--size", locator!]);
      assert.notEqual(gone.code, 0, "new clients find no export");
    });
  },
});
