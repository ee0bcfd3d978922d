/**
 * A Worker of the shape-A prototype (docs DATA-PLANE.md): it serves the
 * tracked device over NBD on its own `reusePort` listener of the shared
 * port, with its own descriptor of the file, marking the CBT write table
 * that the owner shares as a SharedArrayBuffer (header, read table, write
 * table: src/engine/cbt_map.ts). Every concurrent writer stores the same
 * active number, read from the header, so no lock is needed. No snapshot is
 * taken in the prototype: a write under a taken snapshot would first ask the
 * owner to copy its NEW chunks.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { CBT_HEADER_BYTES, CbtHeader } from "../../src/engine/cbt_map.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { staticProvider } from "../../src/nbd/export.ts";
import type { NbdExport } from "../../src/nbd/export.ts";
import { openStore } from "../../src/store/open_store.ts";

/** What the owner sends a worker. */
export interface PoolWorkerInit {
  /** The device file. */
  path: string;
  /** The shared TCP port. */
  port: number;
  /** The CBT map's buffer. */
  cbt: SharedArrayBuffer;
  /** Power of 2 of the tracking block size. */
  blockShift: number;
  /** Number of tracking blocks. */
  blockCount: number;
}

self.onmessage = async (event: MessageEvent<PoolWorkerInit>) => {
  const { path, port, cbt, blockShift, blockCount } = event.data;
  const store = await openStore(path);
  const header = new Int32Array(cbt, 0, 4);
  const writeTable = new Uint8Array(cbt, CBT_HEADER_BYTES + blockCount, blockCount);
  const blockSize = 2 ** blockShift;
  const exp: NbdExport = {
    name: "",
    sizeBytes: store.capacityBytes,
    readOnly: false,
    canMultiConn: true,
    blockSize: { minimum: 1, preferred: 4096, maximum: 32 << 20 },
    read: (offset, into) => store.read(offset, into),
    write(offset, data) {
      const number = Atomics.load(header, CbtHeader.ACTIVE);
      const last = Math.min(Math.floor((offset + data.length - 1) / blockSize), blockCount - 1);
      for (let i = Math.floor(offset / blockSize); i <= last; i++) {
        if (writeTable[i] < number) writeTable[i] = number;
      }
      return store.write(offset, data);
    },
    flush: () => store.flush(),
  };
  await startNbdServer(staticProvider([exp]), { tcp: { port, reusePort: true } });
  self.postMessage("listening");
};
