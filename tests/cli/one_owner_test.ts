/**
 * One owner, shown on real `blksnap serve` processes: a second service on
 * the same state folder refuses to start with one line naming the holder's
 * pid, and a second service (its own state folder) cannot attach a device
 * the first one tracks (409 CONFLICT).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createClient } from "../../src/client/client.ts";
import { runCli, RunningCli } from "../_helpers/api_cli.ts";
import { rejectsWithProblem } from "../_helpers/api_problem.ts";

async function apiOf(serve: RunningCli) {
  const [, port] = await serve.waitForStderr(/^HTTP API on http:\/\/[^ ]+:(\d+)\/v1 /, 30_000);
  return createClient({ baseUrl: `http://127.0.0.1:${port}`, retries: 0 });
}

Deno.test("a second service on the same state folder or device is refused", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-owner-" }));
  try {
    const disk = join(root, "disk.img");
    await Deno.writeFile(disk, new Uint8Array(1 << 20));
    const env = (state: string) => ({
      BLKSNAP_LISTEN: "127.0.0.1:0",
      BLKSNAP_BACKEND: "userspace",
      BLKSNAP_STATE_DIR: join(root, state),
      BLKSNAP_ALLOW_PATH: root,
      BLKSNAP_NBD_LISTEN: "127.0.0.1:0",
    });
    await using first = new RunningCli(["serve"], env("state"));
    const client = await apiOf(first);
    await client.devices.attach({ path: disk, name: "d" });

    const refused = await runCli(["serve"], env("state"));
    assert.notEqual(refused.code, 0);
    const errorLines = refused.stderr.split("\n").filter((line) => /Cannot lock/.test(line));
    assert.equal(errorLines.length, 1, refused.stderr);
    assert.match(errorLines[0], new RegExp(`another service \\(pid ${first.pid}\\) holds`));
    assert.doesNotMatch(refused.stderr, /HTTP API on/);

    await using second = new RunningCli(["serve"], env("other-state"));
    const other = await apiOf(second);
    await rejectsWithProblem(other.devices.attach({ path: disk, name: "d" }), {
      status: 409,
      code: "CONFLICT",
    });
    assert.deepEqual(await other.devices.list(), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("after a restart `blksnap devices` lists a device that cannot be opened as missing", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-missing-" }));
  try {
    const disk = join(root, "disk.img");
    await Deno.writeFile(disk, new Uint8Array(1 << 20));
    const env = {
      BLKSNAP_LISTEN: "127.0.0.1:0",
      BLKSNAP_BACKEND: "userspace",
      BLKSNAP_STATE_DIR: join(root, "state"),
      BLKSNAP_ALLOW_PATH: root,
      BLKSNAP_NBD_LISTEN: "127.0.0.1:0",
    };
    {
      await using serve = new RunningCli(["serve"], env);
      await (await apiOf(serve)).devices.attach({ path: disk, name: "d" });
      serve.kill("SIGTERM");
      assert.equal((await serve.finishedWithin(15_000)).code, 0);
    }
    await Deno.rename(disk, `${disk}.away`);
    await using serve = new RunningCli(["serve"], env);
    await apiOf(serve);
    const [, port] = await serve.waitForStderr(/^HTTP API on http:\/\/[^ ]+:(\d+)\/v1 /);
    await serve.waitForStderr(/cannot re-attach d \(.*disk\.img\), listed as missing/);
    const listed = await runCli(["devices", "--url", `http://127.0.0.1:${port}`]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^d\t.*disk\.img\tmissing: Cannot .*disk\.img/m);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
