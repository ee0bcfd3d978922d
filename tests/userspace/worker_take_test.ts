/**
 * Take and destroy while fio and nbdcopy write through the Worker plane:
 * the device is served by two blocking Workers on their fast path (marking
 * the shared CBT, asking the owner to copy NEW chunks), and snapshots are
 * taken and destroyed under that load, four times (the images alternately
 * on a file storage, read by the Workers themselves, and in memory, read
 * by the owner). At each take, once the
 * gate is frozen and the tables are switched (the tracker's unfreeze), the
 * test reads the device file: that is the device at take. Every byte of the
 * image, copied out with nbdcopy through the Workers, must equal it. At the
 * end, a last nbdcopy through the Workers must leave the device equal to
 * its source.
 */

import assert from "node:assert/strict";
import { Engine } from "../../src/engine/engine.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { openStore } from "../../src/store/open_store.ts";
import { engineExports } from "../../src/userspace/export_provider.ts";
import { runToolOk, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { Prng, randomSeed } from "../_helpers/prng.ts";
import { firstDifference } from "../_helpers/reference_model.ts";

const SIZE = 32 << 20;
const CYCLES = 4;

Deno.test({
  name:
    "Workers: take and destroy under fio and nbdcopy writes; every image byte is the device at take",
  ignore: toolsMissing("fio", "nbdcopy"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "worker-take-" });
    const disk = `${dir}/disk.img`;
    const source = `${dir}/source.img`;
    const random = new Prng(randomSeed()).bytes(SIZE);
    await Deno.writeFile(disk, random.map((b) => b ^ 0x33));
    await Deno.writeFile(source, random);
    const engine = new Engine();
    const store = await openStore(disk);
    const tracker = await engine.attach("disk", store);
    let capture = false;
    let atTake: Uint8Array | undefined;
    const unfreeze = tracker.unfreeze.bind(tracker);
    tracker.unfreeze = () => {
      if (capture) {
        capture = false;
        atTake = Deno.readFileSync(disk);
      }
      unfreeze();
    };
    const server = await startNbdServer(engineExports(engine), { tcp: { port: 0 }, workers: 2 });
    const uri = (name: string) => `nbd://127.0.0.1:${server.tcpPort}/${name}`;
    let writing = true;
    let load: Promise<unknown> = Promise.resolve();
    try {
      const fio = runToolOk("fio", [
        "--name=take",
        "--ioengine=nbd",
        `--uri=${uri("disk")}`,
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--runtime=6",
        "--time_based",
        `--size=${SIZE}`,
      ]);
      const copies = (async () => {
        let count = 0;
        while (writing) {
          await runToolOk("nbdcopy", [source, uri("disk")]);
          count++;
        }
        return count;
      })();
      load = Promise.allSettled([fio, copies]);
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        // On a file storage the Workers read the image themselves (image fast path); in memory, the owner does.
        const snapshot = await engine.createSnapshot({
          storage: cycle % 2 === 0
            ? await openStore(`${dir}/diff-${cycle}.img`, { create: true })
            : new MemoryStore({ capacityBytes: 0, maxBytes: 4 * SIZE }),
          limitSectors: (4 * SIZE) / 512,
          trackers: ["disk"],
        });
        capture = true;
        await snapshot.take();
        const reference = atTake!;
        assert.equal(reference.length, SIZE);
        const copy = `${dir}/image-${cycle}.raw`;
        await runToolOk("nbdcopy", [uri(`disk@${snapshot.id}`), copy]);
        const image = await Deno.readFile(copy);
        await Deno.remove(copy);
        const at = firstDifference(image, reference);
        assert.equal(at, -1, `cycle ${cycle}: the image differs from the device at take at ${at}`);
        await snapshot.destroy();
      }
      writing = false;
      await fio;
      assert.ok((await copies) >= 1, "nbdcopy wrote the device during the takes");
      await runToolOk("nbdcopy", [source, uri("disk")]);
      assert.equal(firstDifference(await Deno.readFile(disk), random), -1);
      assert.ok(tracker.cbt.activeNumber >= CYCLES + 1, "every take switched the CBT");
    } finally {
      writing = false;
      await load;
      await server.close();
      await engine.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
