/**
 * Issue 10, point 8: a path outside the prefixes is 403 whether it exists
 * or not, with the same message and no symlink target shown; BLKSNAP_TOKEN
 * is trimmed (a trailing newline locks nobody out) and an empty one is
 * refused at start.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "../_helpers/api_cli.ts";
import { withService } from "../_helpers/service_fixture.ts";
import { startServe, withRoot } from "./_serve.ts";

Deno.test("outside the prefixes: 403 whether the path exists or not, naming no symlink target", async () => {
  await withService({}, async ({ allowed, outside, fetch }) => {
    await Deno.writeFile(join(outside, "exists.img"), new Uint8Array(4096));
    await Deno.symlink(join(outside, "exists.img"), join(allowed, "link.img"));
    await Deno.symlink(join(outside, "missing.img"), join(allowed, "dangling.img"));
    const details: string[] = [];
    for (
      const path of [
        join(outside, "exists.img"),
        join(outside, "missing.img"),
        join(outside, "no-folder", "missing.img"),
        join(allowed, "link.img"),
        join(allowed, "dangling.img"),
      ]
    ) {
      for (
        const [route, body] of [
          ["/v1/devices", { path }],
          ["/v1/snapshots", { devices: [], diffStorage: { path, limitBytes: 1 << 20 } }],
        ] as const
      ) {
        const response = await fetch(route, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        const problem = await response.json();
        assert.equal(response.status, 403, `${route} ${path}: ${JSON.stringify(problem)}`);
        assert.equal(problem.code, "FORBIDDEN");
        const detail = problem.detail.replace(path, "PATH");
        assert.doesNotMatch(detail, /resolves to|exist|missing/, "nothing about existence");
        if (path.startsWith(allowed)) assert.ok(!detail.includes(outside), "no symlink target");
        details.push(detail);
      }
    }
    assert.equal(new Set(details.filter((_, i) => i % 2 === 0)).size, 1, "one message for all");
  });
});

Deno.test("BLKSNAP_TOKEN is trimmed; an empty one is refused at start", async () => {
  await withRoot(async ({ allowed }) => {
    await using serve = await startServe(allowed, { env: { BLKSNAP_TOKEN: "s3cret\n" } });
    const ok = await fetch(`${serve.baseUrl}/v1/version`, {
      headers: { authorization: "Bearer s3cret" },
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const wrong = await fetch(`${serve.baseUrl}/v1/version`);
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    for (const empty of ["", " \n"]) {
      const result = await runCli(
        ["serve", "--state-dir", join(allowed, "state2"), "--listen", "127.0.0.1:0"],
        { BLKSNAP_TOKEN: empty },
      );
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /BLKSNAP_TOKEN is set but empty/);
    }
  });
});
