/**
 * An image export goes away with its snapshot: a client connected across the
 * destroy gets error replies (ESHUTDOWN) to its requests, not a dropped
 * connection or stale data; new clients are told the export does not exist;
 * the list no longer shows it; the device export goes on serving; after its
 * grace the server closes the image's connections.
 */

import { nbdTestWorkers } from "../_helpers/nbd_workers_mode.ts";
import assert from "node:assert/strict";
import { checkEndAcrossDestroy } from "../_helpers/export_end.ts";
import { NbdRequestError } from "../_helpers/nbd_client.ts";
import { exportSize, listExports, missingTools } from "./_helpers/nbd_tools.ts";
import { type UserspaceFixture, userspaceFixture } from "./_helpers/userspace_fixture.ts";

const SIZE = 1 << 20;
const ESHUTDOWN = 108;

async function takenImage(fx: UserspaceFixture) {
  const device = await fx.driver.attach(await fx.createDevice(SIZE), { name: "disk" });
  const created = await fx.driver.createSnapshot({
    deviceIds: ["disk"],
    diffStorage: { path: `${fx.dir}/diff`, limitBytes: 1 << 26 },
  });
  const taken = await fx.driver.takeSnapshot(created.id);
  return { device, snapshotId: created.id, imageUri: taken.devices[0].locator! };
}

async function waitForFile(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await Deno.stat(path);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${path} did not appear in ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

Deno.test({
  name:
    "after destroy, an nbdsh client connected to the image gets clean errors and new ones no export",
  ignore: missingTools("nbdsh", "nbdinfo") !== undefined,
  async fn() {
    const fx = await userspaceFixture();
    try {
      const { device, snapshotId, imageUri } = await takenImage(fx);
      const ready = `${fx.dir}/ready`;
      const destroyed = `${fx.dir}/destroyed`;
      const script = [
        "import os, time",
        `h.connect_uri(${JSON.stringify(imageUri)})`,
        "print('before', len(h.pread(4096, 0)))",
        `open(${JSON.stringify(ready)}, 'w').close()`,
        `while not os.path.exists(${JSON.stringify(destroyed)}): time.sleep(0.01)`,
        "for attempt in range(2):",
        "    try:",
        "        h.pread(4096, 0)",
        "        print('after read')",
        "    except nbd.Error as e:",
        "        print('after', e.errno)",
        "h.shutdown()",
        "print('closed')",
      ].join("\n");
      const child = new Deno.Command("/usr/bin/nbdsh", {
        args: ["-c", script],
        stdout: "piped",
        stderr: "piped",
        env: { PATH: `/usr/bin:/bin:${Deno.env.get("PATH") ?? ""}` },
      }).spawn();
      const output = child.output();
      await waitForFile(ready, 10_000);
      await fx.driver.destroySnapshot(snapshotId);
      await Deno.writeFile(destroyed, new Uint8Array());
      const { code, stdout, stderr } = await output;
      const text = new TextDecoder().decode(stdout);
      assert.equal(code, 0, `${text}${new TextDecoder().decode(stderr)}`);
      assert.equal(text, "before 4096\nafter ESHUTDOWN\nafter ESHUTDOWN\nclosed\n");

      const late = await exportSize(imageUri);
      assert.equal(late.size, undefined);
      assert.match(late.stderr, /has no export named/);
      const names = (await listExports(fx.driver.nbdServer.tcpPort!)).map((e) => e["export-name"]);
      assert.deepEqual(names, ["disk"]);
      assert.equal((await exportSize(device.locator)).size, SIZE, "the device export goes on");
    } finally {
      await fx.cleanup();
    }
  },
});

Deno.test("a client connected across destroy gets ESHUTDOWN replies on the same connection", async () => {
  const fx = await userspaceFixture();
  try {
    const { snapshotId, imageUri } = await takenImage(fx);
    const client = await fx.connect(imageUri);
    assert.equal((await client.pread(0, 4096)).length, 4096);
    await fx.driver.destroySnapshot(snapshotId);
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = await client.pread(0, 4096).then(() => undefined, (e) => e);
      assert.ok(error instanceof NbdRequestError, `${error}`);
      assert.equal(error.errno, ESHUTDOWN);
    }
  } finally {
    await fx.cleanup();
  }
});

Deno.test("a destroyed image's connection: in-flight reads finish or get ESHUTDOWN, later ones ESHUTDOWN, then the server closes it", async () => {
  const fx = await userspaceFixture({
    driver: { nbd: { tcp: { port: 0 }, endedGraceMs: 1000, workers: nbdTestWorkers() } },
  });
  try {
    const { device, snapshotId, imageUri } = await takenImage(fx);
    const seen = await checkEndAcrossDestroy(imageUri, () => fx.driver.destroySnapshot(snapshotId));
    assert.equal(seen.completed + seen.failed, 8);
    assert.ok(seen.refusedAfter >= 1, JSON.stringify(seen));
    assert.match(seen.closedWith, /server closed the connection/);
    assert.equal((await exportSize(device.locator)).size, SIZE, "the device export goes on");
  } finally {
    await fx.cleanup();
  }
});
