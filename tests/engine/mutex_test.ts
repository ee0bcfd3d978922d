import assert from "node:assert/strict";
import { Mutex } from "../../src/engine/mutex.ts";

Deno.test("Mutex hands the lock to waiters in FIFO order", async () => {
  const mutex = new Mutex();
  const order: number[] = [];
  await mutex.lock();
  const waiters = [1, 2, 3].map((n) =>
    mutex.lock().then(() => {
      order.push(n);
      mutex.unlock();
    })
  );
  assert.equal(mutex.contended, true);
  mutex.unlock();
  await Promise.all(waiters);
  assert.deepEqual(order, [1, 2, 3]);
  assert.equal(mutex.locked, false);
});

Deno.test("Mutex.tryLock() never overtakes a queued waiter", async () => {
  const mutex = new Mutex();
  assert.equal(mutex.tryLock(), true);
  assert.equal(mutex.tryLock(), false);
  const waiter = mutex.lock();
  mutex.unlock(); // handed to the waiter, still locked
  assert.equal(mutex.locked, true);
  assert.equal(mutex.tryLock(), false);
  await waiter;
  mutex.unlock();
  assert.equal(mutex.tryLock(), true);
  mutex.unlock();
});

Deno.test("Mutex.run() releases the lock when the action throws", async () => {
  const mutex = new Mutex();
  await assert.rejects(mutex.run(() => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(mutex.locked, false);
  assert.equal(await mutex.run(() => Promise.resolve(7)), 7);
});
