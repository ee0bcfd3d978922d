/**
 * The parts of the e2e helpers that run anywhere: cleanup ordering and error reporting, block
 * runs and extent arithmetic, NBD locators, the append writer's expected output.
 */

import assert from "node:assert/strict";
import { flattenErrors, withCleanup } from "../e2e/_helpers/cleanup.ts";
import { physicalBlocks, toRuns } from "../e2e/_helpers/ext4.ts";
import { imageDevicePath, versionPattern } from "../e2e/_helpers/module.ts";
import { parseNbdUri } from "../e2e/_helpers/nbd.ts";
import { appendLine, AppendWriter, LINE_BYTES } from "../e2e/_helpers/writers.ts";

Deno.test("withCleanup undoes the steps in reverse order and returns the case's result", async () => {
  const order: string[] = [];
  const result = await withCleanup((stack) => {
    stack.defer(() => void order.push("first registered"));
    stack.defer(() => void order.push("last registered"));
    return Promise.resolve(42);
  });
  assert.equal(result, 42);
  assert.deepEqual(order, ["last registered", "first registered"]);
});

Deno.test("withCleanup: the case's failure wins; every cleanup step still runs", async () => {
  let ran = 0;
  const printed: string[] = [];
  const original = console.error;
  console.error = (message: string) => void printed.push(message);
  try {
    await assert.rejects(
      withCleanup((stack) => {
        stack.defer(() => void ran++);
        stack.defer(() => Promise.reject(new Error("umount failed")));
        return Promise.reject(new Error("the assertion"));
      }),
      /the assertion/,
    );
  } finally {
    console.error = original;
  }
  assert.equal(ran, 1);
  assert.match(printed.join("\n"), /umount failed/);
});

Deno.test("withCleanup: failed cleanup steps are all reported by message", async () => {
  const error = await withCleanup((stack) => {
    stack.defer(() => Promise.reject(new Error("rmmod: module in use")));
    stack.defer(() => Promise.reject(new Error("umount: target is busy")));
    return Promise.resolve();
  }).then(() => undefined, (e) => e);
  assert.ok(error instanceof AggregateError);
  assert.deepEqual(error.errors.map((e: Error) => e.message), [
    "umount: target is busy",
    "rmmod: module in use",
  ]);
});

Deno.test("flattenErrors unwraps nested SuppressedErrors, oldest first", () => {
  const a = new Error("a");
  const b = new Error("b");
  const c = new Error("c");
  assert.deepEqual(flattenErrors(new SuppressedError(c, new SuppressedError(b, a))), [a, b, c]);
  assert.deepEqual(flattenErrors(a), [a]);
});

Deno.test("toRuns merges block numbers into sorted inclusive runs", () => {
  assert.deepEqual(toRuns([7, 3, 4, 5, 9, 8, 4]), [{ first: 3, last: 5 }, { first: 7, last: 9 }]);
  assert.deepEqual(toRuns([]), []);
});

Deno.test("physicalBlocks maps logical blocks through extents and refuses holes", () => {
  const extents = [{ logical: 0, physical: 1000, length: 4 }, {
    logical: 4,
    physical: 2000,
    length: 4,
  }];
  assert.deepEqual(physicalBlocks(extents, 2, 5), [1002, 1003, 2000, 2001]);
  assert.throws(() => physicalBlocks(extents, 7, 8), /hole/);
});

Deno.test("parseNbdUri splits the service's locators, image exports included", () => {
  assert.deepEqual(parseNbdUri("nbd://127.0.0.1:10809/disk0@5f0c-11"), {
    host: "127.0.0.1",
    port: "10809",
    exportName: "disk0@5f0c-11",
  });
  assert.throws(() => parseNbdUri("/dev/veeamblksnapimg_254:49"), /Not an nbd/);
});

Deno.test("AppendWriter lines are 64 bytes, numbered, and expected() is a prefix of any longer run", () => {
  assert.equal(appendLine(0).length, LINE_BYTES);
  assert.equal(appendLine(123456).length, LINE_BYTES);
  assert.match(appendLine(7), /^line 0000000007 .*\n$/);
  const long = AppendWriter.expected(10 * LINE_BYTES);
  const short = AppendWriter.expected(3 * LINE_BYTES + 5);
  assert.deepEqual(long.subarray(0, short.length), short);
  assert.equal(new TextDecoder().decode(long.subarray(LINE_BYTES, 2 * LINE_BYTES)), appendLine(1));
});

Deno.test("AppendWriter appends whole lines and stops on request", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const writer = new AppendWriter(`${dir}/log`);
    while (writer.bytesWritten < 4 * 1024) await new Promise((r) => setTimeout(r, 5));
    const total = await writer.stop();
    assert.equal(total % (16 * LINE_BYTES), 0);
    assert.deepEqual(await Deno.readFile(`${dir}/log`), AppendWriter.expected(total));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("each profile's image names and VERSION, as the e2e cases expect them", () => {
  const origin = { major: 254, minor: 1 };
  assert.equal(imageDevicePath("upstream", origin), "/dev/blksnap-254-1");
  assert.equal(imageDevicePath("outoftree", origin), "/dev/veeamblksnapimg_254:1");
  assert.match("2.0.0.0", versionPattern("upstream"));
  assert.doesNotMatch("7.0.0.0", versionPattern("upstream"));
  assert.match("7.0.0.0", versionPattern("outoftree"));
  assert.doesNotMatch("2.0.0.0", versionPattern("outoftree"));
});
