/**
 * A Worker of the shape-A prototype (docs DATA-PLANE.md): it serves the
 * tracked device over NBD on its own `reusePort` listener of the shared
 * port, with its own descriptor of the file, marking the CBT write table
 * that the owner shares as a SharedArrayBuffer (header, read table, write
 * table: src/engine/cbt_map.ts). Every concurrent writer stores the same
 * active number, read from the header, so no lock is needed. Under a taken
 * snapshot (the owner sends the chunk table too), a write over a chunk the
 * shared table shows NEW first asks the owner to copy it (a message, answered
 * once the owner published IN_MEMORY) and writes only then. Prototype: the
 * snapshot is taken before the workers start, and no take or destroy
 * happens while they run (the owner's write gate is not shared yet).
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
  /** The chunk table of a taken snapshot (src/engine/chunk_table.ts layout), if any. */
  chunks?: { buffer: SharedArrayBuffer; count: number; shift: number };
}

/** A worker's request to the owner: copy the NEW chunks of a byte range, answered with `{ done: id }`. */
export interface CopyRequest {
  /** Matches the answer. */
  id: number;
  /** Start of the range in bytes. */
  offset: number;
  /** Length in bytes. */
  length: number;
}

self.onmessage = async (event: MessageEvent<PoolWorkerInit>) => {
  const { path, port, cbt, blockShift, blockCount, chunks } = event.data;
  const states = chunks && new Uint8Array(chunks.buffer, chunks.count * 8, chunks.count);
  const chunkSize = chunks ? 2 ** chunks.shift : 0;
  const pending = new Map<number, () => void>();
  let nextId = 0;
  self.onmessage = (answer: MessageEvent<{ done: number }>) => {
    pending.get(answer.data.done)?.();
    pending.delete(answer.data.done);
  };
  const needsCopy = (offset: number, length: number): boolean => {
    if (states === undefined) return false;
    const last = Math.floor((offset + length - 1) / chunkSize);
    for (let i = Math.floor(offset / chunkSize); i <= last; i++) if (states[i] === 0) return true;
    return false;
  };
  const copy = (offset: number, length: number): Promise<void> =>
    new Promise((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      self.postMessage({ id, offset, length } satisfies CopyRequest);
    });
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
    async write(offset, data) {
      const number = Atomics.load(header, CbtHeader.ACTIVE);
      const last = Math.min(Math.floor((offset + data.length - 1) / blockSize), blockCount - 1);
      for (let i = Math.floor(offset / blockSize); i <= last; i++) {
        if (writeTable[i] < number) writeTable[i] = number;
      }
      if (needsCopy(offset, data.length)) await copy(offset, data.length);
      await store.write(offset, data);
    },
    flush: () => store.flush(),
  };
  await startNbdServer(staticProvider([exp]), { tcp: { port, reusePort: true } });
  self.postMessage("listening");
};
