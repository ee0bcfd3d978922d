import assert from "node:assert/strict";
import { DiffBufferPool } from "../../src/engine/diff_buffer_pool.ts";

Deno.test("DiffBufferPool reuses released buffers", () => {
  const pool = new DiffBufferPool(4096, 2);
  const a = pool.take();
  assert.equal(a.length, 4096);
  pool.release(a);
  assert.equal(pool.freeCount, 1);
  assert.equal(pool.take(), a);
  assert.equal(pool.allocatedCount, 1);
});

Deno.test("DiffBufferPool keeps at most the pool size of free buffers", () => {
  const pool = new DiffBufferPool(512, 2);
  const buffers = [pool.take(), pool.take(), pool.take(), pool.take()];
  assert.equal(pool.allocatedCount, 4);
  for (const buffer of buffers) pool.release(buffer);
  assert.equal(pool.freeCount, 2);
  pool.clear();
  assert.equal(pool.freeCount, 0);
  const none = new DiffBufferPool(512, 0);
  none.release(none.take());
  assert.equal(none.freeCount, 0);
});
