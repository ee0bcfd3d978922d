import assert from "node:assert/strict";
import { nbdWorkers, nbdWorkersDefault } from "../../src/cli/commands/nbd_workers_flag.ts";
import { serveSettings } from "../../src/cli/commands/serve.ts";
import type { CliIo } from "../../src/cli/context.ts";
import { UsageError } from "../../src/cli/exit_codes.ts";

Deno.test("--nbd-workers takes 0 to 256 and auto (at least four, at least the cores)", () => {
  assert.equal(nbdWorkers("0"), 0);
  assert.equal(nbdWorkers("3"), 3);
  assert.equal(nbdWorkers("256"), 256);
  assert.equal(nbdWorkers("auto"), Math.max(4, navigator.hardwareConcurrency));
  for (const bad of ["", "-1", "257", "two", "1.5", " 2"]) {
    assert.throws(() => nbdWorkers(bad), UsageError, bad);
  }
});

Deno.test("the default is auto for the userspace backend (fast paths) and 0 for the kernel backend", () => {
  assert.equal(nbdWorkersDefault("userspace"), nbdWorkers("auto"));
  assert.equal(nbdWorkersDefault("kernel"), 0);
});

Deno.test("serve reads --nbd-workers and BLKSNAP_NBD_WORKERS, the flag winning", async () => {
  const io = (env: Record<string, string>): CliIo => ({ out() {}, err() {}, env: (n) => env[n] });
  const workers = async (args: string[], env: Record<string, string> = {}) => {
    const result = await serveSettings(["--state-dir", "/tmp/x", ...args], io(env));
    assert.notEqual(result, "help");
    return (result as Exclude<typeof result, "help">).nbdWorkers;
  };
  assert.equal(await workers([]), undefined, "not given: the backend's default");
  assert.equal(await workers(["--nbd-workers", "2"]), 2);
  assert.equal(await workers([], { BLKSNAP_NBD_WORKERS: "3" }), 3);
  assert.equal(await workers(["--nbd-workers", "0"], { BLKSNAP_NBD_WORKERS: "3" }), 0);
  await assert.rejects(workers(["--nbd-workers", "lots"]), UsageError);
});
