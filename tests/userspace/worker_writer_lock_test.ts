/**
 * The Workers' writes to one device take its writer lock
 * (src/nbd/worker/writer_lock.ts) and leave it free: while nbdcopy writes
 * over four connections, this thread samples the lock's slot in the
 * tracker's write gate and sees it held; afterwards it is free and the
 * device holds the source's bytes.
 */

import assert from "node:assert/strict";
import { Engine } from "../../src/engine/engine.ts";
import { WriteGate } from "../../src/engine/tracker.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { openStore } from "../../src/store/open_store.ts";
import { engineExports } from "../../src/userspace/export_provider.ts";
import { runToolOk, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { firstDifference } from "../_helpers/reference_model.ts";
import { Prng, randomSeed } from "../_helpers/prng.ts";

const SIZE = 64 << 20;

Deno.test({
  name: "Workers: nbdcopy's writes over four connections take the device's writer lock and free it",
  ignore: toolsMissing("nbdcopy"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "worker-writer-lock-" });
    const disk = `${dir}/disk.img`;
    const source = `${dir}/source.img`;
    const bytes = new Prng(randomSeed()).bytes(SIZE);
    await Deno.writeFile(disk, new Uint8Array(SIZE));
    await Deno.writeFile(source, bytes);
    const engine = new Engine();
    const store = await openStore(disk);
    const tracker = await engine.attach("disk", store);
    const server = await startNbdServer(engineExports(engine), { tcp: { port: 0 }, workers: 4 });
    let samples = 0;
    let held = 0;
    const sampler = setInterval(() => {
      samples++;
      if (Atomics.load(tracker.gate, WriteGate.WRITER) !== 0) held++;
    }, 1);
    try {
      for (let copy = 0; copy < 4; copy++) {
        await runToolOk("nbdcopy", [source, `nbd://127.0.0.1:${server.tcpPort}/disk`]);
      }
      clearInterval(sampler);
      assert.ok(held > 0, `the lock was never seen held in ${samples} samples`);
      assert.equal(Atomics.load(tracker.gate, WriteGate.WRITER), 0, "the lock is left free");
      const written = new Uint8Array(SIZE);
      await tracker.read(0, written);
      assert.equal(firstDifference(written, bytes), -1);
    } finally {
      clearInterval(sampler);
      await server.close();
      await engine.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
