/**
 * The Workers' image reads (src/nbd/worker/image_reader.ts) on real files:
 * which chunks are read from where, which reads go to the owner, and, with
 * a second thread playing the owner's copy-on-write followed by the device
 * write (as the engine does: store the old chunk, STORED, then overwrite the
 * original), that a read never returns a byte written after the take.
 */

import assert from "node:assert/strict";
import { ImageReader } from "../../src/nbd/worker/image_reader.ts";
import type { ImageView } from "../../src/nbd/worker/fast_path.ts";
import { cString, libc, Sys } from "../../src/nbd/worker/libc.ts";

const CHUNK = 4096;
const STORED = 2;
const IN_MEMORY = 1;

/** Files and a chunk table for `count` chunks: the original holds chunk k filled with k % 251. */
async function imageFixture(count: number) {
  const dir = await Deno.makeTempDir({ prefix: "image-reader-" });
  const old = new Uint8Array(count * CHUNK);
  for (let k = 0; k < count; k++) old.fill(k % 251, k * CHUNK, (k + 1) * CHUNK);
  await Deno.writeFile(`${dir}/origin.img`, old);
  await Deno.writeFile(`${dir}/storage.img`, new Uint8Array(count * CHUNK));
  const view: ImageView = {
    storagePath: `${dir}/storage.img`,
    storageIdentity: { block: false, device: 0, inode: 0 },
    table: new SharedArrayBuffer(count * 9),
    statesOffset: count * 8,
    count,
    shift: 12,
    sizeBytes: count * CHUNK,
    control: new SharedArrayBuffer(12),
  };
  const origin = libc().open(cString(`${dir}/origin.img`), Sys.O_RDONLY | Sys.O_CLOEXEC, 0);
  const storage = libc().open(cString(`${dir}/storage.img`), Sys.O_RDONLY | Sys.O_CLOEXEC, 0);
  return {
    dir,
    old,
    view,
    reader: new ImageReader(view, origin, storage),
    states: new Uint8Array(view.table, view.statesOffset, count),
    offsets: new Float64Array(view.table, 0, count),
    control: new Int32Array(view.control),
    async close() {
      libc().close(origin);
      libc().close(storage);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("image reader: NEW chunks from the original, STORED ones from the storage, the rest to the owner", async () => {
  const fx = await imageFixture(8);
  try {
    // Chunk 2 is STORED at storage offset 5 chunks, holding 0xaa there; chunk 3 is in memory.
    const storageFile = await Deno.open(fx.view.storagePath, { write: true });
    await storageFile.seek(5 * CHUNK, Deno.SeekMode.Start);
    await storageFile.write(new Uint8Array(CHUNK).fill(0xaa));
    storageFile.close();
    fx.offsets[2] = 5 * CHUNK;
    Atomics.store(fx.states, 2, STORED);
    const into = new Uint8Array(3 * CHUNK - 100);
    assert.equal(fx.reader.read(100, into), true);
    const expected = fx.old.slice(100, 3 * CHUNK);
    expected.fill(0xaa, 2 * CHUNK - 100);
    assert.deepEqual(into, expected);
    Atomics.store(fx.states, 3, IN_MEMORY);
    assert.equal(fx.reader.read(2 * CHUNK, new Uint8Array(2 * CHUNK)), false, "in transition");
    assert.equal(fx.reader.read(7 * CHUNK, new Uint8Array(CHUNK + 1)), false, "past the end");
    Atomics.store(fx.control, 0, 1);
    assert.equal(fx.reader.read(0, new Uint8Array(CHUNK)), false, "corrupted");
    Atomics.store(fx.control, 0, 0);
    Atomics.store(fx.control, 1, 1);
    assert.equal(fx.reader.read(0, new Uint8Array(CHUNK)), false, "destroy under way");
    assert.equal(Atomics.load(fx.control, 2), 0, "no read left counted in flight");
  } finally {
    await fx.close();
  }
});

Deno.test("image reader: while another thread copies chunks out and overwrites the original, reads return only take-time bytes", async () => {
  const count = 4096;
  const fx = await imageFixture(count);
  const progress = new Int32Array(new SharedArrayBuffer(4));
  const owner = new Worker(new URL("./_workers/cow_writer.ts", import.meta.url), {
    type: "module",
  });
  try {
    const done = new Promise<void>((resolve, reject) => {
      owner.onmessage = () => resolve();
      owner.onerror = (event) => reject(event.error ?? new Error(event.message));
    });
    owner.postMessage({
      dir: fx.dir,
      table: fx.view.table,
      count,
      chunk: CHUNK,
      progress: progress.buffer,
    });
    let served = 0;
    const into = new Uint8Array(2 * CHUNK);
    for (;;) {
      const at = Atomics.load(progress, 0);
      if (at >= count) break;
      const first = Math.min(at, count - 2);
      if (!fx.reader.read(first * CHUNK, into)) continue;
      served++;
      const want = fx.old.subarray(first * CHUNK, (first + 2) * CHUNK);
      for (let i = 0; i < into.length; i++) {
        if (into[i] !== want[i]) {
          assert.fail(
            `chunk ${first + Math.floor(i / CHUNK)}: byte ${into[i]}, at take ${want[i]}`,
          );
        }
      }
    }
    await done;
    assert.ok(served > 100, `only ${served} reads raced the writer`);
  } finally {
    owner.terminate();
    await fx.close();
  }
});
