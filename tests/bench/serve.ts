/**
 * Our NBD server as a separate process for the benchmarks (so that it can
 * be profiled alone, like nbdkit and qemu-nbd run alone):
 *
 *   deno run -A tests/bench/serve.ts --mode memory|file|file-sync|file-ffi|tracker|snapshot|image --path disk.img --port N
 *     [--storage dir]
 *
 * - memory: the file's contents loaded into a MemoryExport (the protocol
 *   layer's ceiling: no file I/O behind it).
 * - file: the plain file export (tests/_helpers FileExport, node:fs/promises
 *   positioned I/O); file-sync: the same with synchronous positioned I/O;
 *   file-ffi: libc pread/pwrite through nonblocking FFI (ffi_file_export.ts).
 * - tracker: the file attached to the engine; writes go through Tracker.
 * - snapshot: as tracker, after a snapshot is taken, so that first writes
 *   copy the original chunks into a difference storage in `--storage`
 *   (a directory on another file system, e.g. /dev/shm) or in memory.
 * - image: as snapshot, but the default export is the snapshot's image of
 *   the file (read-only), for the sparse copy row.
 * - tracker-pool: the shape-A prototype of DATA-PLANE.md: the owner attaches
 *   the file and `--workers N` Workers (default: the core count) serve it on
 *   reusePort listeners of the port, marking the shared CBT (pool_worker.ts).
 *   Needs --unstable-net. snapshot-pool: the same after a take, the workers
 *   asking the owner to copy NEW chunks before they write.
 * - tracker-blocking: the shape-B prototype: the owner attaches the file and
 *   opens the listening socket through libc; `--workers N` Workers (default
 *   8, at least the connections a client opens) each accept one connection
 *   at a time and serve it with blocking FFI syscalls (blocking_worker.ts).
 *   snapshot-blocking: the same after a take, copy requests through a slot.
 *
 * Prints "ready" once listening; stops cleanly on SIGTERM or SIGINT.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Engine } from "../../src/engine/engine.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { staticProvider } from "../../src/nbd/export.ts";
import type { NbdExport } from "../../src/nbd/export.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { openStore } from "../../src/store/open_store.ts";
import { FileExport, MemoryExport } from "../_helpers/nbd_exports.ts";
import { ffiFileExport } from "./ffi_file_export.ts";
import { COPY_SLOT_BYTES, listenTcp, openBlockingLibc } from "./blocking_libc.ts";
import type { CopyRequest } from "./pool_worker.ts";
import type { DiffArea } from "../../src/engine/diff_area.ts";
import { deviceExport } from "../../src/userspace/device_export.ts";
import { imageExport } from "../../src/userspace/image_export.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mode: { type: "string", default: "file" },
    path: { type: "string" },
    port: { type: "string", default: "10809" },
    storage: { type: "string" },
    workers: { type: "string" },
  },
});
if (values.path === undefined) throw new Error("--path is required");

const closers: (() => Promise<void>)[] = [];
let engine: Engine | undefined;
let exp: NbdExport;
if (values.mode === "memory") {
  const memory = new MemoryExport({ name: "", sizeBytes: (await Deno.stat(values.path)).size });
  memory.fill(0, await Deno.readFile(values.path));
  exp = memory;
} else if (values.mode === "file-ffi") {
  const file = await ffiFileExport(values.path, "");
  closers.push(() => Promise.resolve(file.close()));
  exp = file;
} else if (values.mode === "file" || values.mode === "file-sync") {
  const io = values.mode === "file" ? "async" : "sync";
  const file = await FileExport.open(values.path, { name: "", io });
  closers.push(() => file.close());
  exp = file;
} else {
  engine = new Engine();
  const store = await openStore(values.path);
  closers.push(() => store.close(), () => engine!.close());
  const tracker = await engine.attach("disk", store);
  exp = deviceExport(tracker);
  if (values.mode.startsWith("snapshot") || values.mode === "image") {
    const storagePath = values.storage;
    const storage = storagePath === undefined
      ? new MemoryStore({ capacityBytes: 0, maxBytes: 2 * store.capacityBytes })
      : await openStore(storagePath, { create: true });
    if (storagePath !== undefined) closers.unshift(() => Deno.remove(storagePath));
    const snapshot = await engine.createSnapshot({
      storage,
      limitSectors: (2 * store.capacityBytes) / 512,
      trackers: ["disk"],
    });
    await snapshot.take();
    if (values.mode === "image") {
      exp = imageExport(snapshot, tracker);
    }
  }
}

const workers: Worker[] = [];
let server: { close(): Promise<void> } | undefined;
if (values.mode === "tracker-blocking" || values.mode === "snapshot-blocking") {
  const tracker = engine!.tracker("disk");
  const area = tracker.diffArea;
  const listenFd = listenTcp(openBlockingLibc(), Number(values.port));
  const count = Number(values.workers ?? 8);
  for (let i = 0; i < count; i++) {
    const worker = new Worker(new URL("./blocking_worker.ts", import.meta.url), {
      type: "module",
    });
    workers.push(worker);
    const ready = new Promise((resolve) => (worker.onmessage = resolve));
    const slot = new SharedArrayBuffer(COPY_SLOT_BYTES);
    worker.postMessage({
      path: values.path,
      sizeBytes: tracker.capacityBytes,
      listenFd,
      cbt: tracker.cbt.buffer,
      blockShift: tracker.cbt.blockShift,
      blockCount: tracker.cbt.blockCount,
      chunks: area &&
        { buffer: area.table.buffer, count: area.table.count, shift: area.table.shift, slot },
    });
    await ready;
    if (area !== undefined) answerCopies(area, slot);
  }
} else if (values.mode === "tracker-pool" || values.mode === "snapshot-pool") {
  const tracker = engine!.tracker("disk");
  const area = tracker.diffArea;
  const count = Number(values.workers ?? navigator.hardwareConcurrency);
  for (let i = 0; i < count; i++) {
    const worker = new Worker(new URL("./pool_worker.ts", import.meta.url), { type: "module" });
    workers.push(worker);
    const listening = new Promise((resolve) => (worker.onmessage = resolve));
    worker.postMessage({
      path: values.path,
      port: Number(values.port),
      cbt: tracker.cbt.buffer,
      blockShift: tracker.cbt.blockShift,
      blockCount: tracker.cbt.blockCount,
      chunks: area &&
        { buffer: area.table.buffer, count: area.table.count, shift: area.table.shift },
    });
    await listening;
    worker.onmessage = async ({ data }: MessageEvent<CopyRequest>) => {
      await area?.copyOnWrite(data.offset, data.length);
      worker.postMessage({ done: data.id });
    };
  }
} else {
  server = await startNbdServer(staticProvider([exp]), { tcp: { port: Number(values.port) } });
}
console.log("ready");

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await server?.close();
  for (const worker of workers) worker.terminate();
  for (const close of closers.reverse()) await close().catch((error) => console.error(error));
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);

/** The owner's side of a blocking worker's copy-request slot: copy, publish, answer; forever. */
async function answerCopies(area: DiffArea, slot: SharedArrayBuffer): Promise<void> {
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
