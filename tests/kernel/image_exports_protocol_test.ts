/**
 * The NBD protocol checks of tests/nbd (tests/_helpers/nbd_image_checks.ts)
 * against the kernel backend's image exports on the fake kernel: the same
 * checks the lab runs on the real module (tests/e2e/kernel_nbd_suites_test.ts).
 */

import { readChanges } from "../../src/api/changes.ts";
import { KernelImageExports } from "../../src/kernel/image_exports.ts";
import type { KernelDriver } from "../../src/kernel/kernel_driver.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { type KernelFixture, kernelFixture } from "../_helpers/kernel_fixture.ts";
import {
  checkBadRequests,
  checkBlockStatus,
  checkListAndInfo,
  checkMultiConn,
  checkStructuredReads,
  checkWrites,
  type ImageExportTarget,
} from "../_helpers/nbd_image_checks.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";

const ignore = toolsMissing("nbdinfo", "nbdcopy");
const BLOCK = 64 * 1024;

async function readFileRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const file = await Deno.open(path);
  try {
    const out = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    for (let done = 0; done < length;) {
      const n = await file.read(out.subarray(done));
      if (n === null) break;
      done += n;
    }
    return out;
  } finally {
    file.close();
  }
}

/** A second snapshot of vdb (blocks 2, 5-6 and the tail changed since the first), served. */
async function withImage(
  options: { writable: boolean },
  body: (target: ImageExportTarget, fx: KernelFixture) => Promise<void>,
): Promise<void> {
  const fx = await kernelFixture("upstream");
  const driver: KernelDriver = await fx.driver();
  const exports = new KernelImageExports(driver);
  const server = await startNbdServer(exports, { tcp: { port: 0 } });
  try {
    const [vdb] = fx.devices;
    await driver.attach(vdb.path);
    const take = async () => {
      const created = await driver.createSnapshot({
        deviceIds: ["vdb"],
        diffStorage: { path: `${fx.dir}/diff-${crypto.randomUUID()}`, limitBytes: 1 << 30 },
        writable: options.writable,
      });
      return (await driver.takeSnapshot(created.id)).id;
    };
    await driver.destroySnapshot(await take());
    fx.fake.writeDevice(vdb.path, 2 * BLOCK + 100, pattern(10, 1));
    fx.fake.writeDevice(vdb.path, 5 * BLOCK, pattern(2 * BLOCK, 2));
    fx.fake.writeDevice(vdb.path, vdb.content.length - 10, pattern(10, 3));
    const id = await take();
    const [image] = (await driver.snapshotInfo(id)).devices;
    const changes = await readChanges(driver, image);
    await body({
      port: server.tcpPort!,
      name: `vdb@${id}`,
      sizeBytes: await driver.imageSize(id, "vdb"),
      writable: options.writable,
      bytes: (offset, length) => readFileRange(image.imageDevicePath!, offset, length),
      dirty: changes.extents,
    }, fx);
  } finally {
    await server.close();
    await exports.close();
    await fx.cleanup();
  }
}

Deno.test({
  name: "kernel image export (fake kernel): handshake, list and info",
  ignore,
  fn: () => withImage({ writable: false }, (target) => checkListAndInfo(target)),
});

Deno.test({
  name: "kernel image export (fake kernel): structured reads equal the image device",
  ignore,
  fn: () => withImage({ writable: false }, (target) => checkStructuredReads(target)),
});

Deno.test({
  name: "kernel image export (fake kernel): block status of base:allocation and the CBT",
  ignore,
  fn: () => withImage({ writable: false }, (target) => checkBlockStatus(target)),
});

Deno.test({
  name: "kernel image export (fake kernel): multi-conn and pipelined reads",
  ignore,
  fn: () => withImage({ writable: false }, (target, fx) => checkMultiConn(target, fx.dir)),
});

Deno.test({
  name: "kernel image export (fake kernel): bad requests get NBD errors (read-only and writable)",
  ignore,
  async fn() {
    await withImage({ writable: false }, (target) => checkBadRequests(target));
    await withImage({ writable: true }, (target) => checkBadRequests(target));
  },
});

Deno.test({
  name: "kernel image export (fake kernel): a writable snapshot's export takes writes",
  ignore,
  fn: () => withImage({ writable: true }, (target) => checkWrites(target, 3 * BLOCK)),
});
