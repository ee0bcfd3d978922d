/**
 * EventWaiter's kernel waits are short slices: the module holds the snapshot for as long as a
 * SNAPSHOT_WAIT_EVENT sleeps, so a destroyed snapshot and its difference storage are released
 * only when the wait in flight returns (seen in the lab: after DELETE, a tmpfs holding the
 * storage stayed busy while an SSE client's 15 s wait slept on). The blocking call here is a
 * stand-in that sleeps `timeout_ms` and reports ENOENT, as the module does without events.
 */

import assert from "node:assert/strict";
import { BlksnapSnapshotEvent } from "../../src/kernel/abi.ts";
import type { BlockingIoctl } from "../../src/kernel/blocking_ioctl.ts";
import { KernelErrno } from "../../src/kernel/errno.ts";
import { EventWaiter } from "../../src/kernel/event_waiter.ts";

/** A blocking call that sleeps `timeout_ms` and ends empty, recording each timeout asked. */
function sleepingKernel() {
  const timeouts: number[] = [];
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const blocking: BlockingIoctl = {
    call(_fd, _request, arg) {
      const { timeout_ms } = BlksnapSnapshotEvent.decode(arg);
      timeouts.push(timeout_ms);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          timers.delete(timer);
          resolve({ result: -1, errno: KernelErrno.ENOENT });
        }, timeout_ms);
        timers.add(timer);
      });
    },
    close() {
      for (const timer of timers) clearTimeout(timer);
    },
  };
  return { blocking, timeouts, sleeping: () => timers.size };
}

async function until(condition: () => boolean, timeoutMs: number): Promise<number> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > timeoutMs) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return performance.now() - started;
}

Deno.test("EventWaiter splits a long wait into kernel waits of at most sliceMs", async () => {
  const kernel = sleepingKernel();
  const waiter = new EventWaiter(kernel.blocking, 3, { sliceMs: 40, graceMs: 10 });
  try {
    assert.equal(await waiter.wait("s", new Uint8Array(16), 200), undefined);
    assert.ok(kernel.timeouts.length >= 4, `${kernel.timeouts.length} kernel waits`);
    assert.ok(kernel.timeouts.every((t) => t <= 40), `timeouts ${kernel.timeouts}`);
    await until(() => kernel.sleeping() === 0, 200);
  } finally {
    waiter.close();
  }
});

Deno.test("EventWaiter: after forget() the kernel wait in flight ends within one slice", async () => {
  const kernel = sleepingKernel();
  const waiter = new EventWaiter(kernel.blocking, 3, { sliceMs: 40 });
  try {
    const pending = waiter.wait("s", new Uint8Array(16), 10_000).then(
      () => "resolved",
      () => "rejected",
    );
    await until(() => kernel.sleeping() === 1, 200);
    waiter.forget("s");
    assert.equal(await pending, "rejected");
    const after = await until(() => kernel.sleeping() === 0, 1000);
    assert.ok(after <= 200, `the kernel wait went on for ${after.toFixed(0)} ms after forget`);
    assert.deepEqual(kernel.timeouts, [40], "no wait was started again for a forgotten snapshot");
  } finally {
    waiter.close();
  }
});

Deno.test("EventWaiter uses 250 ms slices by default", async () => {
  const kernel = sleepingKernel();
  const waiter = new EventWaiter(kernel.blocking, 3);
  try {
    const pending = waiter.wait("s", new Uint8Array(16), 5_000);
    await until(() => kernel.timeouts.length === 1, 200);
    assert.deepEqual(kernel.timeouts, [250]);
    waiter.forget("s");
    await pending.catch(() => {});
    await until(() => kernel.sleeping() === 0, 1000);
  } finally {
    waiter.close();
  }
});
