import assert from "node:assert/strict";
import { CHUNK_ST_IN_MEMORY, CHUNK_ST_STORED } from "../../src/engine/chunk.ts";
import { ChunkTable } from "../../src/engine/chunk_table.ts";
import { holesPossible, imageAllocation, storeAllocation } from "../../src/userspace/allocation.ts";
import { fileAllocation } from "../../src/userspace/file_allocation.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { openStore } from "../../src/store/open_store.ts";

const KiB = 1024;
const HOLE = 3;

Deno.test("fileAllocation() reports a sparse file's data and holes from any offset", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/sparse.img`;
  try {
    const file = await Deno.open(path, { write: true, create: true });
    await file.truncate(1024 * KiB);
    await file.seek(256 * KiB, Deno.SeekMode.Start);
    await file.write(new Uint8Array(64 * KiB).fill(7));
    file.close();
    const store = await openStore(path);
    try {
      const query = storeAllocation(store)!;
      assert.deepEqual(query(0, 1024 * KiB), [
        { length: 256 * KiB, flags: HOLE },
        { length: 64 * KiB, flags: 0 },
        { length: 704 * KiB, flags: HOLE },
      ]);
      assert.deepEqual(query(300 * KiB, 100 * KiB), [
        { length: 20 * KiB, flags: 0 },
        { length: 80 * KiB, flags: HOLE },
      ]);
      assert.deepEqual(
        fileAllocation(store.fd, { offset: 1000 * KiB, length: 100 * KiB, sizeBytes: 1024 * KiB }),
        [{ length: 24 * KiB, flags: HOLE }],
        "clipped to the file size",
      );
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("storeAllocation() is undefined for stores that never have holes", () => {
  assert.equal(storeAllocation(new MemoryStore({ capacityBytes: 4096 })), undefined);
});

Deno.test("imageAllocation() takes the origin's allocation in NEW chunks, data in copied ones", () => {
  const chunk = 64 * KiB;
  const table = new ChunkTable(8 * chunk, { shift: 16, count: 8 });
  table.states[2] = CHUNK_ST_IN_MEMORY;
  table.states[3] = CHUNK_ST_STORED;
  const asked: [number, number][] = [];
  const origin = (offset: number, length: number) => {
    asked.push([offset, length]);
    return [{ length, flags: HOLE }];
  };
  assert.deepEqual(imageAllocation(table, origin, { offset: chunk / 2, length: 6 * chunk }), [
    { length: chunk * 1.5, flags: HOLE },
    { length: 2 * chunk, flags: 0 },
    { length: 2.5 * chunk, flags: HOLE },
  ]);
  assert.deepEqual(
    asked,
    [[chunk / 2, chunk * 1.5], [4 * chunk, 2.5 * chunk]],
    "runs asked together",
  );
  assert.deepEqual(imageAllocation(table, undefined, { offset: 0, length: 8 * chunk }), [
    { length: 8 * chunk, flags: 0 },
  ]);
});

Deno.test("holesPossible() turns false once the file is fully allocated, again true when it grows", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/filling.img`;
  try {
    const file = await Deno.open(path, { write: true, create: true });
    await file.truncate(128 * KiB);
    await file.write(new Uint8Array(64 * KiB).fill(1));
    const store = await openStore(path);
    try {
      const holes = holesPossible(store, storeAllocation(store)!);
      assert.equal(holes(), true);
      await file.write(new Uint8Array(64 * KiB).fill(2));
      for (let i = 0; i < 1024 && holes(); i++) {
        // looks again within a bounded number of calls
      }
      assert.equal(holes(), false, "fully allocated");
      await file.truncate(256 * KiB);
      await store.refreshCapacity();
      assert.equal(holes(), true, "the grown part is sparse");
    } finally {
      await store.close();
      file.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
