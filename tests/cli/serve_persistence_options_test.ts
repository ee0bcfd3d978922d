/**
 * serve's restart options: `--cbt-persistence on|off` (BLKSNAP_CBT_PERSISTENCE) and
 * `--destroy-snapshots-on-exit` (BLKSNAP_DESTROY_SNAPSHOTS_ON_EXIT), flags winning over the
 * environment, and a clear usage error for a bad value.
 */

import assert from "node:assert/strict";
import { serveSettings } from "../../src/cli/commands/serve.ts";
import { UsageError } from "../../src/cli/exit_codes.ts";
import type { CliIo } from "../../src/cli/context.ts";

function io(env: Record<string, string> = {}): CliIo {
  return { out() {}, err() {}, env: (name) => env[name] };
}

async function settings(args: string[], env: Record<string, string> = {}) {
  const result = await serveSettings(["--state-dir", "/tmp/x", ...args], io(env));
  assert.notEqual(result, "help");
  return result as Exclude<typeof result, "help">;
}

Deno.test("serve keeps the CBT and the snapshots by default", async () => {
  const s = await settings([]);
  assert.deepEqual([s.cbtPersistence, s.destroySnapshotsOnExit], [true, false]);
});

Deno.test("serve reads the restart options from flags and the environment", async () => {
  assert.equal((await settings(["--cbt-persistence", "off"])).cbtPersistence, false);
  assert.equal((await settings([], { BLKSNAP_CBT_PERSISTENCE: "off" })).cbtPersistence, false);
  assert.equal(
    (await settings(["--cbt-persistence", "on"], { BLKSNAP_CBT_PERSISTENCE: "off" }))
      .cbtPersistence,
    true,
  );
  assert.equal((await settings(["--destroy-snapshots-on-exit"])).destroySnapshotsOnExit, true);
  for (const [value, expected] of [["1", true], ["yes", true], ["0", false], ["", false]]) {
    const s = await settings([], { BLKSNAP_DESTROY_SNAPSHOTS_ON_EXIT: value as string });
    assert.equal(s.destroySnapshotsOnExit, expected, `"${value}"`);
  }
});

Deno.test("serve refuses a bad --cbt-persistence value with a usage error", async () => {
  await assert.rejects(settings(["--cbt-persistence", "maybe"]), (error) => {
    assert.ok(error instanceof UsageError);
    assert.match(error.message, /--cbt-persistence must be on or off, got "maybe"/);
    return true;
  });
});
