import assert from "node:assert/strict";
import { CHUNK_ST_NEW, CHUNK_ST_STORED } from "../../src/engine/chunk.ts";
import { CHUNK_TABLE_BYTES_PER_CHUNK, ChunkTable } from "../../src/engine/chunk_table.ts";

Deno.test("ChunkTable holds every chunk in 9 bytes of one SharedArrayBuffer, all NEW", () => {
  const table = new ChunkTable(10 * 4096 + 100, { shift: 12, count: 11 });
  assert.ok(table.buffer instanceof SharedArrayBuffer);
  assert.equal(table.buffer.byteLength, 11 * CHUNK_TABLE_BYTES_PER_CHUNK);
  assert.ok(CHUNK_TABLE_BYTES_PER_CHUNK <= 16);
  assert.ok(table.states.every((state) => state === CHUNK_ST_NEW));
  assert.equal(table.sizeOf(10), 100, "the last chunk is short");
  assert.equal(table.sizeOf(3), 4096);
  assert.equal(table.indexOf(4096 * 3 + 5), 3);
});

Deno.test("ChunkTable.runEnd() finds runs of one state; anyNew() sees a NEW chunk in a range", () => {
  const table = new ChunkTable(8 * 4096, { shift: 12, count: 8 });
  table.states.set([CHUNK_ST_STORED, CHUNK_ST_STORED, CHUNK_ST_STORED], 2);
  assert.equal(table.runEnd(0, 7), 2);
  assert.equal(table.runEnd(2, 7), 5);
  assert.equal(table.runEnd(2, 3), 4, "a run stops at the last chunk asked for");
  assert.equal(table.runEnd(5, 7), 8);
  assert.equal(table.anyNew(2, 4), false);
  assert.equal(table.anyNew(2, 5), true);
});
