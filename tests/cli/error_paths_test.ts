/**
 * Every verb's error paths, run as a user would (the CLI as a subprocess against a live service,
 * an unreachable one, and none): each failure must be one line starting with "blksnapctl: " that
 * names the problem (plus the "--help" hint for usage errors), with the documented exit status,
 * and no JavaScript stack frame anywhere in the output.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type CliResult, runCli } from "../_helpers/api_cli.ts";
import { withService, writeDisk } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const CLI_MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const UNKNOWN_SNAPSHOT = "0f8fad5b-d9cb-469f-a165-70867728950e";

/** One error path: the command line, the exit status and what the message must say. */
interface ErrorPath {
  args: string[];
  code: number;
  says: RegExp;
  env?: Record<string, string>;
  cwd?: string;
}

/** Lines that betray a stack trace: V8 frames and source locations. */
const STACK_FRAME = /^\s+at |\.ts:\d+:\d+|file:\/\/|node:internal|ext:/m;

function assertOneLineFailure(path: ErrorPath, result: CliResult): void {
  const line = path.args.join(" ");
  const output = result.stdout + result.stderr;
  assert.equal(result.code, path.code, `${line}: exit ${result.code}\n${output}`);
  assert.doesNotMatch(output, STACK_FRAME, `${line}: a stack frame in\n${output}`);
  assert.equal(result.stdout, "", `${line}: nothing on stdout`);
  const lines = result.stderr.trimEnd().split("\n");
  assert.match(lines[0], /^blksnapctl: \S/, `${line}: ${result.stderr}`);
  if (path.code === 2) {
    assert.ok(lines.length <= 2, `${line}: ${result.stderr}`);
    if (lines.length === 2) assert.match(lines[1], /^Run "blksnapctl .*--help" for usage\.$/);
  } else {
    assert.equal(lines.length, 1, `${line}: one line, got\n${result.stderr}`);
  }
  assert.match(lines[0], path.says, `${line}: ${lines[0]}`);
}

/** Runs the paths a few at a time (each is a Deno process) and checks each. */
async function check(paths: ErrorPath[], env: Record<string, string>): Promise<void> {
  for (let i = 0; i < paths.length; i += 4) {
    const batch = paths.slice(i, i + 4);
    const results = await Promise.all(
      batch.map((p) => runCli(p.args, { ...env, ...p.env }, { cwd: p.cwd })),
    );
    batch.forEach((p, j) => assertOneLineFailure(p, results[j]));
  }
}

Deno.test("CLI error paths of every verb against a live service: one line, no stack trace", async () => {
  await withService({}, async ({ baseUrl, client, makeDisk, allowed, outside, root }) => {
    const disk = await makeDisk("disk.img", 2 * MIB);
    const free = await makeDisk("free.img", MIB);
    await makeDisk("spare.img", MIB);
    await client.devices.attach({ path: disk, name: "vda" });
    await client.devices.attach({ path: free, name: "free" });
    const taken = await client.snapshots.create({
      devices: ["vda"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.take(taken.id);
    const created = await client.snapshots.create({
      devices: [],
      diffStorage: { path: join(allowed, "diff2"), limitBytes: 4 * MIB },
    });
    await Deno.writeTextFile(join(outside, "x.img"), "x");
    const id = taken.id;
    const paths: ErrorPath[] = [
      // attach
      { args: ["attach"], code: 2, says: /missing PATH/ },
      { args: ["attach", "--name"], code: 2, says: /--name/ },
      { args: ["attach", join(allowed, "none.img")], code: 3, says: /NOT_FOUND/ },
      { args: ["attach", join(outside, "x.img")], code: 3, says: /allowed prefixes.*FORBIDDEN/ },
      { args: ["attach", "x.img"], code: 3, says: /outside.*FORBIDDEN/, cwd: outside },
      { args: ["attach", allowed], code: 3, says: /INVALID_ARGUMENT/ },
      { args: ["attach", "--name", "bad name!", disk], code: 3, says: /must be a device id/ },
      { args: ["attach", "--name", "other", disk], code: 3, says: /attached as vda.*CONFLICT/ },
      // detach
      { args: ["detach"], code: 2, says: /missing DEVICE/ },
      { args: ["detach", "no-such"], code: 3, says: /NOT_FOUND/ },
      { args: ["detach", "bad id!"], code: 2, says: /DEVICE must be a device id/ },
      {
        args: ["detach", "./spare.img"],
        code: 3,
        says: /No attached device.*NOT_FOUND/,
        cwd: allowed,
      },
      { args: ["detach", "vda"], code: 3, says: /CONFLICT/ },
      // devices
      { args: ["devices", "extra", "--bogus"], code: 2, says: /Unknown option '--bogus'/ },
      // cbtinfo, readcbtmap, markdirty
      { args: ["cbtinfo"], code: 2, says: /missing DEVICE/ },
      { args: ["cbtinfo", "no-such"], code: 3, says: /NOT_FOUND/ },
      { args: ["cbtinfo", "/dev/nope"], code: 3, says: /No attached device has the path/ },
      { args: ["readcbtmap", "vda"], code: 2, says: /missing --file/ },
      { args: ["readcbtmap", "vda", "--file", "m", "--offset", "x"], code: 2, says: /--offset/ },
      {
        args: ["readcbtmap", "vda", "--file", join(root, "m"), "--offset", "999"],
        code: 3,
        says: /beyond the map.*OUT_OF_RANGE/,
      },
      {
        args: ["readcbtmap", "vda", "--file", "/nonexistent/dir/m"],
        code: 1,
        says: /^blksnapctl: Cannot write \/nonexistent\/dir\/m: No such file or directory$/,
      },
      { args: ["markdirty", "vda"], code: 2, says: /missing --range/ },
      { args: ["markdirty", "vda", "--range", "1:2:3"], code: 2, says: /SECTOR:COUNT/ },
      { args: ["markdirty", "vda", "--range", "0:0"], code: 3, says: /INVALID_ARGUMENT/ },
      { args: ["markdirty", "vda", "--range", "99999999:1"], code: 3, says: /OUT_OF_RANGE/ },
      // snapshot
      { args: ["snapshot", "explode"], code: 2, says: /unknown snapshot verb "explode"/ },
      { args: ["snapshot", "create", "--device", "vda"], code: 2, says: /missing --storage/ },
      {
        args: ["snapshot", "create", "--storage", "d", "--limit", "lots"],
        code: 2,
        says: /--limit must be a size/,
      },
      {
        args: ["snapshot", "create", "--device", "nope", "--storage", join(allowed, "d3")],
        code: 3,
        says: /NOT_FOUND/,
      },
      {
        args: ["snapshot", "create", "--device", "vda", "--storage", join(allowed, "d4")],
        code: 3,
        says: /CONFLICT/,
      },
      {
        args: ["snapshot", "create", "--device", "free", "--storage", join(outside, "d")],
        code: 3,
        says: /FORBIDDEN/,
      },
      { args: ["snapshot", "add", id], code: 2, says: /missing DEVICE/ },
      { args: ["snapshot", "add", "abc", "free"], code: 2, says: /SNAPSHOT must be a snapshot id/ },
      { args: ["snapshot", "add", id, "free"], code: 3, says: /CONFLICT/ },
      { args: ["snapshot", "add", UNKNOWN_SNAPSHOT, "free"], code: 3, says: /NOT_FOUND/ },
      { args: ["snapshot", "take"], code: 2, says: /missing SNAPSHOT/ },
      { args: ["snapshot", "take", "12"], code: 2, says: /a UUID such as/ },
      { args: ["snapshot", "take", id], code: 3, says: /CONFLICT/ },
      { args: ["snapshot", "take", UNKNOWN_SNAPSHOT], code: 3, says: /NOT_FOUND/ },
      { args: ["snapshot", "info", UNKNOWN_SNAPSHOT], code: 3, says: /NOT_FOUND/ },
      { args: ["snapshot", "info", "x"], code: 2, says: /SNAPSHOT must be a snapshot id/ },
      { args: ["snapshot", "list", "--bogus"], code: 2, says: /Unknown option/ },
      { args: ["snapshot", "destroy", UNKNOWN_SNAPSHOT], code: 3, says: /NOT_FOUND/ },
      { args: ["snapshot", "destroy"], code: 2, says: /missing SNAPSHOT/ },
      { args: ["snapshot", "waitevent", id, "--timeout", "soon"], code: 2, says: /--timeout/ },
      { args: ["snapshot", "waitevent", UNKNOWN_SNAPSHOT], code: 3, says: /NOT_FOUND/ },
      { args: ["snapshot", "watch", "x"], code: 2, says: /SNAPSHOT must be a snapshot id/ },
      { args: ["snapshot", "watch", UNKNOWN_SNAPSHOT], code: 3, says: /NOT_FOUND/ },
      // image
      { args: ["image", "explode", id, "vda"], code: 2, says: /unknown image verb/ },
      { args: ["image", "read", id], code: 2, says: /missing DEVICE/ },
      { args: ["image", "read", "x", "vda"], code: 2, says: /SNAPSHOT must be a snapshot id/ },
      { args: ["image", "read", id, "free"], code: 3, says: /NOT_FOUND/ },
      { args: ["image", "read", created.id, "vda"], code: 3, says: /\((NOT_FOUND|CONFLICT)/ },
      {
        args: ["image", "read", id, "vda", "-o", "/nonexistent/x"],
        code: 1,
        says:
          /^blksnapctl: Cannot read vda@\S+: No such file or directory.*; nothing was written to \/nonexistent\/x$/,
      },
      { args: ["image", "read", id, "vda", "--offset", "-1"], code: 2, says: /--offset/ },
      {
        args: ["image", "read", id, "vda", "--offset", String(4 * MIB), "-o", join(root, "i")],
        code: 2,
        says: /--offset 4194304 is beyond the image of 2097152 bytes/,
      },
      { args: ["image", "changes", id, "vda", "--since", "300"], code: 3, says: /since|255/ },
      {
        args: ["image", "changes", id, "vda", "--since", "x"],
        code: 3,
        says: /is not a change token.*FULL_BACKUP_REQUIRED, ESTALE, malformed/,
      },
      { args: ["image", "locate", UNKNOWN_SNAPSHOT, "vda"], code: 3, says: /NOT_FOUND/ },
      { args: ["image", "locate", id, "bad id!"], code: 2, says: /DEVICE must be a device id/ },
      // version
      { args: ["version", "--bogus"], code: 2, says: /Unknown option/ },
    ];
    await check(paths, { BLKSNAP_URL: baseUrl });
  });
});

Deno.test("CLI error paths without a service: unreachable, bad --url, no command, serve's flags", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closed = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  listener.close();
  const unreachable = /Cannot reach the service at http:\/\/127\.0\.0\.1:\d+/;
  const paths: ErrorPath[] = [
    { args: ["frobnicate"], code: 2, says: /unknown command "frobnicate"/ },
    { args: ["version"], code: 4, says: unreachable },
    { args: ["devices"], code: 4, says: unreachable },
    { args: ["attach", "/tmp/x"], code: 4, says: unreachable },
    { args: ["detach", "vda"], code: 4, says: unreachable },
    { args: ["cbtinfo", "vda"], code: 4, says: unreachable },
    { args: ["readcbtmap", "vda", "--file", "/tmp/m"], code: 4, says: unreachable },
    { args: ["markdirty", "vda", "--range", "0:1"], code: 4, says: unreachable },
    { args: ["snapshot", "list"], code: 4, says: unreachable },
    { args: ["snapshot", "watch", UNKNOWN_SNAPSHOT], code: 4, says: unreachable },
    { args: ["image", "read", UNKNOWN_SNAPSHOT, "vda"], code: 4, says: unreachable },
    { args: ["devices", "--url", "not a url"], code: 2, says: /--url must be a URL/ },
    { args: ["devices", "--url", "ftp://x"], code: 2, says: /http:\/\/ or https:\/\// },
    { args: ["devices", "--token-file", "/nonexistent"], code: 2, says: /token file/ },
    { args: ["serve", "--listen", "nowhere"], code: 2, says: /--listen must be/ },
    { args: ["serve", "--backend", "magic"], code: 2, says: /--backend must be/ },
    { args: ["serve", "--nbd-listen", "x"], code: 2, says: /--nbd-listen must be/ },
    { args: ["serve", "--bogus"], code: 2, says: /Unknown option '--bogus'/ },
    { args: ["serve", "--log-format", "xml"], code: 2, says: /--log-format must be text or json/ },
    { args: ["serve", "--log-level", "loud"], code: 2, says: /--log-level must be/ },
    { args: ["serve", "--tls-cert", "/tmp/c.pem"], code: 2, says: /--tls-cert and --tls-key/ },
    { args: ["serve", "--listen", "unix:relative.sock"], code: 2, says: /absolute path/ },
  ];
  await check(paths, { BLKSNAP_URL: closed });
});

Deno.test("CLI: global flags anywhere, --url with /v1, --version without a service", async () => {
  await withService({}, async ({ baseUrl, makeDisk, allowed }) => {
    await makeDisk("rel.img", MIB);
    const first = await runCli(["--url", `${baseUrl}/v1/`, "--json", "attach", "./rel.img"], {}, {
      cwd: allowed,
    });
    assert.equal(first.code, 0, first.stderr);
    assert.equal(JSON.parse(first.stdout).path, join(allowed, "rel.img"), "resolved in cwd");
    const shapes = [
      ["--json", "devices", "--url", baseUrl],
      ["devices", "--json", "--url", `${baseUrl}/v1`],
      ["--url", baseUrl, "cbtinfo", "--json", join(allowed, "rel.img")],
      ["--url", baseUrl, "cbtinfo", "--json", "./rel.img"],
    ];
    const results = await Promise.all(shapes.map((args) => runCli(args, {}, { cwd: allowed })));
    results.forEach((result, i) => {
      assert.equal(result.code, 0, `${shapes[i].join(" ")}: ${result.stderr}`);
      JSON.parse(result.stdout);
    });
    assert.equal(JSON.parse(results[2].stdout).blockCount, 16);
    const snapshot = await runCli(
      [
        "snapshot",
        "--url",
        baseUrl,
        "create",
        "--device",
        "./rel.img",
        "--storage",
        "rel.diff",
        "--json",
      ],
      {},
      { cwd: allowed },
    );
    assert.equal(snapshot.code, 0, snapshot.stderr);
    const created = JSON.parse(snapshot.stdout);
    assert.equal(created.storage.limitBytes, 1 << 30, "the documented default --limit is 1G");
    assert.equal(created.storage.path, join(allowed, "rel.diff"));
    assert.deepEqual(created.devices.map((d: { deviceId: string }) => d.deviceId), ["rel.img"]);
  });
  for (const flag of ["--version", "-V"]) {
    const version = await runCli([flag], { BLKSNAP_URL: "http://127.0.0.1:1" });
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^blksnapctl \d+\.\d+\.\d+ \(deno \d+\.\d+\.\d+\)\n$/);
  }
});

Deno.test("CLI image read while the snapshot is destroyed: one line, exit 1, no stack trace", async () => {
  await withService({}, async ({ baseUrl, client, allowed, root }) => {
    // Data, not holes: a sparse-aware read would skip a hole of any size at once.
    const path = join(allowed, "big.img");
    await writeDisk(path, 256 * MIB, { seed: 9 });
    await client.devices.attach({ path, name: "big" });
    const snapshot = await client.snapshots.create({
      devices: ["big"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.take(snapshot.id);
    const out = join(root, "big.raw");
    const reading = runCli(["image", "read", snapshot.id, "big", "-o", out], {
      BLKSNAP_URL: baseUrl,
    });
    // The read writes a temporary file beside the output and renames it at the end.
    const partial = async () => {
      for await (const entry of Deno.readDir(root)) {
        if (entry.name.startsWith(".big.raw")) {
          return await Deno.stat(join(root, entry.name)).then((s) => s.size, () => 0);
        }
      }
      return 0;
    };
    for (let i = 0;; i++) {
      const size = await partial();
      if (size > 0) break;
      assert.ok(i < 3000, "the read did not start");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await client.snapshots.destroy(snapshot.id);
    const result = await reading;
    assertOneLineFailure({
      args: ["image", "read", "(destroyed)"],
      code: 1,
      says: /^blksnapctl: Cannot read big@\S+: .*; nothing was written to /,
    }, result);
  });
});

Deno.test("CLI image read into a pipe its reader closed: one line naming standard output, exit 1", async () => {
  await withService({}, async ({ baseUrl, client, allowed }) => {
    const path = join(allowed, "big.img");
    await Deno.writeFile(path, new Uint8Array(0));
    await Deno.truncate(path, 256 << 20);
    await client.devices.attach({ path, name: "big" });
    const snapshot = await client.snapshots.create({
      devices: ["big"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.take(snapshot.id);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI_MAIN, "image", "read", snapshot.id, "big", "--url", baseUrl],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const reader = child.stdout.getReader();
    assert.ok((await reader.read()).value!.length > 0);
    await reader.cancel();
    const [status, stderr] = await Promise.all([
      child.status,
      new Response(child.stderr).text(),
    ]);
    assertOneLineFailure({
      args: ["image", "read", "(into a closed pipe)"],
      code: 1,
      says: /^blksnapctl: Cannot read big@\S+: Broken pipe/,
    }, { code: status.code, stdout: "", stdoutBytes: new Uint8Array(), stderr });
  });
});
