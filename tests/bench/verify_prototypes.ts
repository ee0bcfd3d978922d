/**
 * A manual check of the multi-core prototypes' copy-on-write (not part of
 * the test run: shape A needs --unstable-net, and blocked Workers end only
 * with the process):
 *
 *   deno run -A --unstable-net tests/bench/verify_prototypes.ts --mode blocking|pool [--dir D]
 *
 * Makes a 64 MiB random device, takes a snapshot, serves the device through
 * the prototype's Workers (port 10991) and the image from the owner (port
 * 10992), writes through the Workers with fio (4 KiB random, QD16) and
 * nbdcopy (four connections), then checks with nbdcopy and a byte
 * comparison that the image still reads as the device at take and that the
 * device holds the new data. Prints the outcome and exits 0 or 1.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Engine } from "../../src/engine/engine.ts";
import { staticProvider } from "../../src/nbd/export.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { openStore } from "../../src/store/open_store.ts";
import { imageExport } from "../../src/userspace/image_export.ts";
import { runToolOk } from "../_helpers/nbd_fixture.ts";
import { COPY_SLOT_BYTES, listenTcp, openBlockingLibc } from "./blocking_libc.ts";
import type { CopyRequest } from "./pool_worker.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { mode: { type: "string", default: "blocking" }, dir: { type: "string" } },
});
const dir = values.dir ?? await Deno.makeTempDir({ prefix: "blksnap-verify-" });
const SIZE = 64 << 20;
const take = crypto.getRandomValues(new Uint8Array(SIZE).subarray(0, 65536));
const original = new Uint8Array(SIZE);
for (let at = 0; at < SIZE; at += 65536) original.set(take.map((b, i) => b ^ (at >> 16) ^ i), at);
const next = original.map((b) => b ^ 0xff);
await Deno.writeFile(`${dir}/disk.img`, original);
await Deno.writeFile(`${dir}/new.img`, next);

const engine = new Engine();
const tracker = await engine.attach("disk", await openStore(`${dir}/disk.img`));
const snapshot = await engine.createSnapshot({
  storage: new MemoryStore({ capacityBytes: 0, maxBytes: 4 * SIZE }),
  limitSectors: (4 * SIZE) / 512,
  trackers: ["disk"],
});
await snapshot.take();
const area = tracker.diffArea!;
const table = { buffer: area.table.buffer, count: area.table.count, shift: area.table.shift };
const cbt = {
  cbt: tracker.cbt.buffer,
  blockShift: tracker.cbt.blockShift,
  blockCount: tracker.cbt.blockCount,
};
await startNbdServer(staticProvider([imageExport(snapshot, tracker)]), { tcp: { port: 10992 } });

if (values.mode === "blocking") {
  const listenFd = listenTcp(openBlockingLibc(), 10991);
  for (let i = 0; i < 8; i++) {
    const worker = new Worker(new URL("./blocking_worker.ts", import.meta.url), { type: "module" });
    const ready = new Promise((resolve) => (worker.onmessage = resolve));
    const slot = new SharedArrayBuffer(COPY_SLOT_BYTES);
    worker.postMessage({
      path: `${dir}/disk.img`,
      sizeBytes: SIZE,
      listenFd,
      ...cbt,
      chunks: { ...table, slot },
    });
    await ready;
    answer(slot);
  }
} else {
  for (let i = 0; i < 2; i++) {
    const worker = new Worker(new URL("./pool_worker.ts", import.meta.url), { type: "module" });
    const ready = new Promise((resolve) => (worker.onmessage = resolve));
    worker.postMessage({ path: `${dir}/disk.img`, port: 10991, ...cbt, chunks: table });
    await ready;
    worker.onmessage = async ({ data }: MessageEvent<CopyRequest>) => {
      await area.copyOnWrite(data.offset, data.length);
      worker.postMessage({ done: data.id });
    };
  }
}

async function answer(slot: SharedArrayBuffer): Promise<void> {
  const state = new Int32Array(slot, 0, 1);
  const range = new Float64Array(slot, 8, 2);
  for (;;) {
    const current = Atomics.load(state, 0);
    if (current === 1) {
      await area.copyOnWrite(range[0], range[1]);
      Atomics.store(state, 0, 2);
      Atomics.notify(state, 0);
      continue;
    }
    const wait = Atomics.waitAsync(state, 0, current);
    if (wait.async) await wait.value;
  }
}

await runToolOk("fio", [
  "--name=verify",
  "--ioengine=nbd",
  "--uri=nbd://127.0.0.1:10991/",
  "--rw=randwrite",
  "--bs=4k",
  "--iodepth=16",
  "--size=64m",
  "--io_size=16m",
]);
await runToolOk("nbdcopy", [`${dir}/new.img`, "nbd://127.0.0.1:10991/"]);
await runToolOk("nbdcopy", ["nbd://127.0.0.1:10992/", `${dir}/image.raw`]);
const image = await Deno.readFile(`${dir}/image.raw`);
const device = await Deno.readFile(`${dir}/disk.img`);
const imageOk = image.every((b, i) => b === original[i]);
const deviceOk = device.every((b, i) => b === next[i]);
console.log(`${values.mode}: image as at take: ${imageOk}; device holds the new data: ${deviceOk}`);
if (values.dir === undefined) await Deno.remove(dir, { recursive: true });
Deno.exit(imageOk && deviceOk ? 0 : 1);
