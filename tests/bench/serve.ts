/**
 * Our NBD server as a separate process for the benchmarks (so that it can
 * be profiled alone, like nbdkit and qemu-nbd run alone):
 *
 *   deno run -A tests/bench/serve.ts --mode memory|file|file-sync|file-ffi|tracker|snapshot|image[-workers] --path disk.img --port N
 *     [--storage dir]
 *
 * - memory: the file's contents loaded into a MemoryExport (the protocol
 *   layer's ceiling: no file I/O behind it).
 * - file: the plain file export (tests/_helpers FileExport, node:fs/promises
 *   positioned I/O); file-sync: the same with synchronous positioned I/O;
 *   file-ffi: libc pread/pwrite through nonblocking FFI (ffi_file_export.ts).
 * - tracker: the file attached to the engine; writes go through Tracker.
 * - snapshot: as tracker, after a snapshot is taken, so that first writes
 *   copy the original chunks into a difference storage file `--storage`
 *   (the bench puts it in its own directory, beside nbdkit's cow overlay)
 *   or in memory.
 * - image: as snapshot, but the default export is the snapshot's image of
 *   the file (read-only), for the sparse copy row; image-workers: the same
 *   through the Worker plane (image READs on the Workers' fast path).
 * - tracker-workers, snapshot-workers: tracker and snapshot served by the
 *   product's Worker plane (src/nbd/worker, `blksnapctl serve --nbd-workers`)
 *   with `--workers N|auto` blocking Workers (default auto, as the flag), the
 *   device export offering its fast path as the userspace backend's does.
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
import { offerFastPath } from "../../src/nbd/worker/fast_path.ts";
import { deviceExport } from "../../src/userspace/device_export.ts";
import { deviceFastPath } from "../../src/userspace/device_fast_path.ts";
import { nbdWorkers } from "../../src/cli/commands/nbd_workers_flag.ts";
import { imageExport } from "../../src/userspace/image_export.ts";
import { imageFastPath } from "../../src/userspace/image_fast_path.ts";

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
  offerFastPath(exp, deviceFastPath(tracker, () => true));
  if (values.mode.startsWith("snapshot") || values.mode.startsWith("image")) {
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
    if (values.mode.startsWith("image")) {
      exp = imageExport(snapshot, tracker);
      offerFastPath(exp, imageFastPath(snapshot, tracker));
    }
  }
}

const workers = values.mode.endsWith("-workers") ? nbdWorkers(values.workers ?? "auto") : 0;
const server = await startNbdServer(staticProvider([exp]), {
  tcp: { port: Number(values.port) },
  workers,
});
console.log("ready");

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await server.close();
  for (const close of closers.reverse()) await close().catch((error) => console.error(error));
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
