/**
 * Kernel image locators through the API, the client and the CLI, on the
 * fake kernel: while the service serves the images over NBD, an image's
 * locator is its export's URI (the same scheme as the userspace backend's)
 * and `imageDevicePath` is the image device; without NBD the locator is the
 * image device. `snapshot info` and `image locate` print both.
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/api/app.ts";
import { serveHttp } from "../../src/api/http_listener.ts";
import { PathPolicy } from "../../src/api/path_policy.ts";
import { createClient } from "../../src/client/client.ts";
import { KernelImageExports } from "../../src/kernel/image_exports.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { runCli } from "../_helpers/api_cli.ts";
import { kernelFixture } from "../_helpers/kernel_fixture.ts";

Deno.test("kernel images: the API, the client and the CLI give the NBD locator and the image device", async () => {
  const fx = await kernelFixture("upstream");
  const driver = await fx.driver();
  const exports = new KernelImageExports(driver);
  const nbd = await startNbdServer(exports, { tcp: { port: 0 } });
  const app = createApp(driver, { paths: await PathPolicy.create([fx.dir]) });
  const http = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), app.fetch);
  const baseUrl = `http://127.0.0.1:${(http.addr as Deno.NetAddr).port}`;
  const client = createClient({ baseUrl });
  try {
    await driver.attach(fx.devices[0].path);
    const created = await driver.createSnapshot({
      deviceIds: ["vdb"],
      diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 30 },
    });
    await driver.takeSnapshot(created.id);
    const devicePath = `${fx.dir}/blksnap-7-1`;

    const bare = await client.images.locator(created.id, "vdb");
    assert.equal(bare.locator, devicePath, "no NBD: the image device");
    assert.equal(bare.imageDevicePath, devicePath);

    driver.serveImagesAt((name) => `nbd://127.0.0.1:${nbd.tcpPort}/${name}`);
    const uri = `nbd://127.0.0.1:${nbd.tcpPort}/vdb@${created.id}`;
    const [image] = (await client.snapshots.get(created.id)).devices;
    assert.equal(image.locator, uri);
    assert.equal(image.imageDevicePath, devicePath);
    const located = await client.images.locator(created.id, "vdb");
    assert.equal(located.locator, uri);
    assert.equal(located.imageDevicePath, devicePath);
    assert.equal(located.sizeBytes, fx.devices[0].content.length);

    const env = { BLKSNAP_URL: baseUrl };
    const locate = await runCli(["image", "locate", created.id, "vdb"], env);
    assert.equal(locate.code, 0, locate.stderr);
    assert.match(locate.stdout, new RegExp(`^${uri}\\t\\d+ bytes\\nimage device ${devicePath}\\n`));
    const info = await runCli(["snapshot", "info", created.id], env);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, new RegExp(`device {4}vdb {2}image ${uri} \\(${devicePath}\\)`));
  } finally {
    await http.shutdown();
    await nbd.close();
    await exports.close();
    await fx.cleanup();
  }
});
