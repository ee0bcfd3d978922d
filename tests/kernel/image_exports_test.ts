/**
 * The kernel backend's images over NBD, on the fake kernel (a regular file
 * stands in for each image device) with the real clients: nbdcopy reads the
 * image device's bytes, nbdinfo --map reads the CBT contexts as the API's
 * changes do, a writable snapshot's export takes writes (nbdsh), and the
 * export is gone after destroy.
 */

import assert from "node:assert/strict";
import { readChanges } from "../../src/api/changes.ts";
import { KernelImageExports } from "../../src/kernel/image_exports.ts";
import type { KernelDriver } from "../../src/kernel/kernel_driver.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { type KernelFixture, kernelFixture } from "../_helpers/kernel_fixture.ts";
import { nbdsh, pattern, runTool, runToolOk, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { nbdTestWorkers } from "../_helpers/nbd_workers_mode.ts";

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
  const server = await startNbdServer(exports, { tcp: { port: 0 }, workers: nbdTestWorkers() });
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
      await runToolOk("nbdcopy", ["--connections=4", uri(`vdb@${id}`), out]);
      const image = (await driver.snapshotInfo(id)).devices[0].locator!;
      assert.deepEqual(await Deno.readFile(out), await Deno.readFile(image));
      assert.deepEqual(await Deno.readFile(out), vdb.content, "the device as it was at take");
      const info = await runToolOk("nbdinfo", ["--json", uri(`vdb@${id}`)]);
      const parsed = JSON.parse(info) as {
        protocol: string;
        exports: Array<{ can_multi_conn: boolean; contexts: string[] }>;
      };
      assert.equal(parsed.exports[0].can_multi_conn, true);
      assert.deepEqual(parsed.exports[0].contexts.sort(), [
        "base:allocation",
        "blksnap:change-number",
        "qemu:dirty-bitmap:cbt",
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
