import assert from "node:assert/strict";
import { MemoryStore } from "../../src/store/memory_store.ts";

Deno.test("MemoryStore reads back what was written and zeros elsewhere", async () => {
  const store = new MemoryStore({ capacityBytes: 4096 });
  await store.write(100, new Uint8Array([1, 2, 3]));
  const back = new Uint8Array(5);
  await store.read(99, back);
  assert.deepEqual([...back], [0, 1, 2, 3, 0]);
  assert.equal(store.minIoBytes, 512);
  assert.equal(await store.refreshCapacity(), 4096);
  await store.flush();
  await store.close();
});

Deno.test("MemoryStore refuses I/O past its capacity with RangeError", async () => {
  const store = new MemoryStore({ capacityBytes: 1024 });
  await assert.rejects(store.read(1020, new Uint8Array(5)), RangeError);
  await assert.rejects(store.write(-1, new Uint8Array(1)), RangeError);
  await assert.rejects(store.grow(2048), RangeError, "fixed capacity by default");
  await store.close();
});

Deno.test("MemoryStore grows up to its maximum, keeping its data", async () => {
  const store = new MemoryStore({ capacityBytes: 512, maxBytes: 4096 });
  await store.write(0, new Uint8Array([9]));
  await store.grow(4096);
  assert.equal(store.capacityBytes, 4096);
  await store.write(4095, new Uint8Array([7]));
  assert.deepEqual([...store.snapshotBytes(0, 1)], [9]);
  assert.deepEqual([...store.snapshotBytes(4095, 1)], [7]);
  await store.grow(1024); // smaller: no change
  assert.equal(store.capacityBytes, 4096);
  await assert.rejects(store.grow(4097), RangeError);
  await store.close();
});

Deno.test("MemoryStore identities are unique; closed stores reject I/O", async () => {
  const a = new MemoryStore({ capacityBytes: 1 });
  const b = new MemoryStore({ capacityBytes: 1 });
  assert.equal(a.identity.kind, "memory");
  assert.notEqual(a.identity.device, b.identity.device);
  await a.close();
  assert.equal(a.closed, true);
  await assert.rejects(a.read(0, new Uint8Array(1)));
  await assert.rejects(a.write(0, new Uint8Array(1)));
  await b.close();
});
