/**
 * EventReader: one kernel wait in flight per watched snapshot, in short slices (the module
 * holds the snapshot for as long as a SNAPSHOT_WAIT_EVENT sleeps, so a destroyed snapshot and
 * its difference storage are released only when the wait in flight returns: seen in the lab,
 * a tmpfs holding the storage stayed busy while a 15 s wait slept on). The blocking call here
 * is a stand-in that sleeps `timeout_ms` and reports ENOENT, as the module does without
 * events, or answers at once (a fake that never blocks).
 */

import assert from "node:assert/strict";
import { BlksnapSnapshotEvent } from "../../src/kernel/abi.ts";
import type { BlockingIoctl } from "../../src/kernel/blocking_ioctl.ts";
import { KernelErrno } from "../../src/kernel/errno.ts";
import { EventReader } from "../../src/kernel/event_reader.ts";
import { isServiceError } from "../../src/errors.ts";

/** A blocking call that sleeps `timeout_ms` (or not at all) and ends empty, recording each timeout. */
function sleepingKernel(options: { sleeps?: boolean } = {}) {
  const timeouts: number[] = [];
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const blocking: BlockingIoctl = {
    call(_fd, _request, arg) {
      const { timeout_ms } = BlksnapSnapshotEvent.decode(arg);
      timeouts.push(timeout_ms);
      if (options.sleeps === false) {
        return Promise.resolve({ result: -1, errno: KernelErrno.ENOENT });
      }
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

const decodeNothing = () => undefined;

Deno.test("EventReader keeps one kernel wait of at most sliceMs in flight per snapshot", async () => {
  const kernel = sleepingKernel();
  const reader = new EventReader(kernel.blocking, 3, { sliceMs: 40 });
  try {
    reader.watch("s", new Uint8Array(16), decodeNothing);
    reader.watch("s", new Uint8Array(16), decodeNothing);
    const page = await reader.wait("s", { timeoutMs: 200 });
    assert.deepEqual(page.events, []);
    await until(() => kernel.timeouts.length >= 3, 5000);
    assert.ok(kernel.timeouts.every((t) => t === 40), `timeouts ${kernel.timeouts}`);
    assert.ok(kernel.sleeping() <= 1, "one wait in flight, not one per watch() or wait()");
  } finally {
    reader.close();
  }
});

Deno.test("EventReader: a kernel wait that ends at once is not repeated before its slice is over", async () => {
  const kernel = sleepingKernel({ sleeps: false });
  const reader = new EventReader(kernel.blocking, 3, { sliceMs: 50 });
  try {
    reader.watch("s", new Uint8Array(16), decodeNothing);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.ok(kernel.timeouts.length <= 8, `${kernel.timeouts.length} calls in 300 ms`);
  } finally {
    reader.close();
  }
});

Deno.test("EventReader: after forget() the kernel wait in flight ends within one slice", async () => {
  const kernel = sleepingKernel();
  const reader = new EventReader(kernel.blocking, 3, { sliceMs: 40 });
  try {
    reader.watch("s", new Uint8Array(16), decodeNothing);
    const pending = reader.wait("s", { timeoutMs: 10_000 }).then(
      () => "resolved",
      (error) => isServiceError(error, "NOT_FOUND") ? "not found" : `${error}`,
    );
    await until(() => kernel.sleeping() === 1, 200);
    const calls = kernel.timeouts.length;
    reader.forget("s");
    assert.equal(await pending, "not found");
    const after = await until(() => kernel.sleeping() === 0, 1000);
    assert.ok(after <= 200, `the kernel wait went on for ${after.toFixed(0)} ms after forget`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(
      kernel.timeouts.length,
      calls,
      "no wait was started again for a forgotten snapshot",
    );
    await assert.rejects(reader.wait("s", { timeoutMs: 0 }), (e) => isServiceError(e, "NOT_FOUND"));
  } finally {
    reader.close();
  }
});

Deno.test("EventReader uses 250 ms slices by default", async () => {
  const kernel = sleepingKernel();
  const reader = new EventReader(kernel.blocking, 3);
  try {
    reader.watch("s", new Uint8Array(16), decodeNothing);
    await until(() => kernel.timeouts.length === 1, 200);
    assert.deepEqual(kernel.timeouts, [250]);
    reader.forget("s");
    await until(() => kernel.sleeping() === 0, 1000);
  } finally {
    reader.close();
  }
});
