/**
 * A snapshot destroyed while a Worker's writes wait for their copy-on-write
 * (prepare_queue.ts): the destroy freezes the write gate and waits for the
 * writes in it, and those writes end on the Worker's own thread, so the
 * Worker must not block on the frozen gate for its next write (it waits on
 * a timer instead). Copies are slowed to 20 ms each so that the destroy
 * always comes while dozens are in flight. nbdcopy must finish, and the
 * device must equal its source.
 */

import assert from "node:assert/strict";
import { Engine } from "../../src/engine/engine.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { openStore } from "../../src/store/open_store.ts";
import { engineExports } from "../../src/userspace/export_provider.ts";
import { runToolOk, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { Prng, randomSeed } from "../_helpers/prng.ts";
import { firstDifference } from "../_helpers/reference_model.ts";

const SIZE = 32 << 20;
const COPY_DELAY_MS = 20;

Deno.test({
  name: "Workers: a destroy while writes wait for copy-on-write neither hangs nor loses a write",
  ignore: toolsMissing("nbdcopy"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "worker-gate-" });
    const disk = `${dir}/disk.img`;
    const source = `${dir}/source.img`;
    const random = new Prng(randomSeed()).bytes(SIZE);
    await Deno.writeFile(disk, random.map((b) => b ^ 0x5a));
    await Deno.writeFile(source, random);
    const engine = new Engine();
    const store = await openStore(disk);
    const copyTo = store.copyTo!.bind(store);
    store.copyTo = async (...args) => {
      await new Promise((resolve) => setTimeout(resolve, COPY_DELAY_MS));
      return copyTo(...args);
    };
    const tracker = await engine.attach("disk", store);
    const server = await startNbdServer(engineExports(engine), { tcp: { port: 0 }, workers: 1 });
    try {
      const snapshot = await engine.createSnapshot({
        storage: await openStore(`${dir}/diff.img`, { create: true }),
        limitSectors: (2 * SIZE) / 512,
        trackers: ["disk"],
      });
      await snapshot.take();
      const copy = runToolOk("nbdcopy", [
        "--connections=1",
        source,
        `nbd://127.0.0.1:${server.tcpPort}/disk`,
      ]);
      while (snapshot.diffArea("disk")!.stats.cowCopies < 8) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("the destroy hung on the frozen gate")), 30_000);
      });
      await Promise.race([snapshot.destroy(), late]).finally(() => clearTimeout(timer));
      await copy;
      assert.equal(tracker.cbt.isCorrupted, false);
      const at = firstDifference(await Deno.readFile(disk), random);
      assert.equal(at, -1, `the device differs from its source at ${at}`);
    } finally {
      await server.close();
      await engine.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
