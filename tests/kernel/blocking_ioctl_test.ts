/**
 * The event worker with a real blocking call: a C library (built with gcc)
 * whose `ioctl` sleeps on the worker thread and sets errno there, and real
 * libc on /dev/null for the ENOTTY path.
 */

import assert from "node:assert/strict";
import {
  BlksnapEventNoSpace,
  BlksnapSnapshotEvent,
  IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
  IOCTL_BLKSNAP_VERSION,
} from "../../src/kernel/abi.ts";
import { WorkerIoctl } from "../../src/kernel/blocking_ioctl.ts";
import { OpenFlags, realLibc } from "../../src/kernel/libc.ts";
import { isServiceError } from "../../src/errors.ts";
import {
  type BlockingIoctlLib,
  buildBlockingIoctlLib,
  hasGcc,
  WaitMode,
} from "../_helpers/blocking_ioctl_lib.ts";

const gcc = hasGcc();
if (!gcc) console.log("skipping the C-library worker tests: gcc is not installed");

function waitArg(timeoutMs: number): Uint8Array {
  return BlksnapSnapshotEvent.encode({
    id: { b: new Uint8Array(16).fill(9) },
    timeout_ms: timeoutMs,
    code: 0,
    time_label: 0,
    data: new Uint8Array(0),
  });
}

async function withLib(fn: (lib: BlockingIoctlLib) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "worker-ioctl-" });
  const lib = await buildBlockingIoctlLib(dir);
  try {
    await fn(lib);
  } finally {
    lib.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "WorkerIoctl returns the event the blocking call wrote, with the caller's fd",
  ignore: !gcc,
  fn: () =>
    withLib(async (lib) => {
      const pool = new WorkerIoctl({ libraryPath: lib.path });
      try {
        lib.configure(WaitMode.noSpace, 20, 4096n);
        const arg = waitArg(1000);
        const outcome = await pool.call(42, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, arg);
        assert.deepEqual(outcome, { result: 0, errno: 0 });
        const event = BlksnapSnapshotEvent.decode(arg);
        assert.equal(event.code, 1);
        assert.equal(event.timeout_ms, 1000, "the bytes the caller sent reached the call");
        assert.equal(BlksnapEventNoSpace.decode(event.data).requested_nr_sect, 4096);
        assert.ok(event.time_label > 0);
        assert.equal(lib.lastFd(), 42);
      } finally {
        pool.close();
      }
    }),
});

Deno.test({
  name: "WorkerIoctl reads errno on the worker thread that made the call",
  ignore: !gcc,
  fn: () =>
    withLib(async (lib) => {
      const pool = new WorkerIoctl({ libraryPath: lib.path });
      try {
        lib.configure(WaitMode.timeout, 0, 0n);
        assert.deepEqual(await pool.call(3, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(10)), {
          result: -1,
          errno: 2,
        });
        lib.configure(WaitMode.error, 0, 0n);
        assert.deepEqual(await pool.call(3, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(10)), {
          result: -1,
          errno: 3,
        });
        assert.deepEqual(await pool.call(3, IOCTL_BLKSNAP_VERSION, new Uint8Array(8)), {
          result: -1,
          errno: 25,
        });
      } finally {
        pool.close();
      }
    }),
});

Deno.test({
  name: "the main thread keeps running timers and calls while a worker is blocked",
  ignore: !gcc,
  fn: () =>
    withLib(async (lib) => {
      const pool = new WorkerIoctl({ libraryPath: lib.path });
      try {
        lib.configure(WaitMode.timeout, 0, 0n);
        const order: string[] = [];
        let ticks = 0;
        const interval = setInterval(() => ticks++, 5);
        const blocked = pool.call(7, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(300)).then(
          (outcome) => {
            order.push(`wait done after ${ticks > 5 ? "many" : "few"} ticks`);
            return outcome;
          },
        );
        await new Promise((resolve) => setTimeout(resolve, 50));
        order.push("timer fired");
        const quick = await pool.call(7, IOCTL_BLKSNAP_VERSION, new Uint8Array(8));
        order.push(`second call answered errno ${quick.errno}`);
        assert.equal(pool.busy, 1, "the blocked call still holds its worker");
        const outcome = await blocked;
        clearInterval(interval);
        assert.deepEqual(order, [
          "timer fired",
          "second call answered errno 25",
          "wait done after many ticks",
        ]);
        assert.equal(outcome.errno, 2);
      } finally {
        pool.close();
      }
    }),
});

Deno.test({
  name: "WorkerIoctl runs concurrent blocking calls on separate workers",
  ignore: !gcc,
  fn: () =>
    withLib(async (lib) => {
      const pool = new WorkerIoctl({ libraryPath: lib.path, maxIdle: 1 });
      try {
        lib.configure(WaitMode.timeout, 0, 0n);
        const calls = [1, 2, 3].map(() =>
          pool.call(5, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(150))
        );
        assert.equal(pool.busy, 3);
        const outcomes = await Promise.all(calls);
        assert.ok(outcomes.every((o) => o.errno === 2));
        assert.equal(pool.busy, 0);
      } finally {
        pool.close();
      }
    }),
});

Deno.test("WorkerIoctl with real libc: WAIT_EVENT on /dev/null fails with ENOTTY", async () => {
  const libc = realLibc();
  const opened = libc.open("/dev/null", OpenFlags.O_RDONLY | OpenFlags.O_CLOEXEC);
  assert.ok(opened.result >= 0);
  const pool = new WorkerIoctl();
  try {
    const outcome = await pool.call(opened.result, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(0));
    assert.deepEqual(outcome, { result: -1, errno: 25 });
  } finally {
    pool.close();
    libc.close(opened.result);
  }
});

Deno.test("WorkerIoctl rejects with UNAVAILABLE when the library cannot be loaded", async () => {
  const pool = new WorkerIoctl({ libraryPath: "/nonexistent/libnothing.so" });
  try {
    await assert.rejects(
      pool.call(0, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(0)),
      (error) => isServiceError(error, "UNAVAILABLE") && /libnothing/.test(error.message),
    );
  } finally {
    pool.close();
  }
});

Deno.test({
  name: "WorkerIoctl.close() rejects calls still blocked",
  ignore: !gcc,
  fn: () =>
    withLib(async (lib) => {
      const pool = new WorkerIoctl({ libraryPath: lib.path });
      lib.configure(WaitMode.timeout, 0, 0n);
      const pending = pool.call(5, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(100));
      pool.close();
      await assert.rejects(pending, (error) => isServiceError(error, "UNAVAILABLE"));
      await assert.rejects(
        pool.call(5, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, waitArg(0)),
        (error) => isServiceError(error, "UNAVAILABLE"),
      );
      // Let the terminated worker's thread leave its sleep before the library is unloaded.
      await new Promise((resolve) => setTimeout(resolve, 150));
    }),
});
