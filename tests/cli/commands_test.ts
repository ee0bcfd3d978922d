import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CliResult,
  runCli,
  runCliOnTerminal,
  RunningCli,
  terminalAvailable,
} from "../_helpers/api_cli.ts";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, withService, writeDisk } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const SIZE = 2 * MIB + 512;

/** The parsed --json output of a run that must have succeeded. */
function json(result: CliResult): unknown {
  assert.equal(result.code, 0, `exit ${result.code}\n${result.stdout}\n${result.stderr}`);
  return JSON.parse(result.stdout);
}

function nonZero(map: Uint8Array): number[] {
  return [...map.keys()].filter((i) => map[i] !== 0);
}

Deno.test("CLI client commands against a running service, with --json", async (t) => {
  await withService({}, async ({ baseUrl, client, allowed, root, makeDisk }) => {
    const env = { BLKSNAP_URL: baseUrl };
    const cli = (...args: string[]) => runCli(args, env);
    const path = join(allowed, "vda.img");
    const content = await writeDisk(path, SIZE, { seed: 5 });
    let snapshotId = "";

    await t.step("version", async () => {
      const version = json(await runCli(["version", "--json", "--url", baseUrl])) as Record<
        string,
        unknown
      >;
      assert.deepEqual(version, await client.version());
      const human = await cli("version");
      assert.equal(human.code, 0);
      assert.match(human.stdout, /^backend\s+userspace$/m);
    });

    await t.step("attach, devices; attaching again is refused with exit 3", async () => {
      const device = json(await cli("attach", "--name", "vda", path, "--json"));
      assert.deepEqual(device, await client.devices.get("vda"));
      assert.deepEqual(json(await cli("devices", "--json")), [device]);
      assert.match((await cli("devices")).stdout, /^vda\t.*vda\.img\t2097664 bytes\tnbd:\/\//m);
      const again = await cli("attach", "--name", "vda", path);
      assert.equal(again.code, 3, again.stderr);
      assert.match(again.stderr, /\(CONFLICT, EBUSY\)/);
    });

    await t.step("cbtinfo, readcbtmap to a file, markdirty", async () => {
      assert.deepEqual(json(await cli("cbtinfo", "vda", "--json")), await client.cbt.info("vda"));
      const mapFile = join(root, "map.bin");
      const written = json(await cli("readcbtmap", "vda", "--file", mapFile, "--json"));
      const map = await Deno.readFile(mapFile);
      assert.deepEqual(map, await client.cbt.map("vda"));
      assert.deepEqual(written, { device: "vda", file: mapFile, blocks: 33, nonZeroBlocks: 0 });
      const part = json(
        await cli(
          "readcbtmap",
          "vda",
          "--file",
          mapFile,
          "--offset",
          "30",
          "--length",
          "3",
          "--json",
        ),
      );
      assert.equal((part as { blocks: number }).blocks, 3);
      assert.equal((await Deno.stat(mapFile)).size, 3);
      const marked = json(
        await cli("markdirty", "vda", "--range", "0:1", "--range", "256:128", "--json"),
      );
      assert.deepEqual(marked, {
        device: "vda",
        ranges: [{ offset: 0, count: 1 }, { offset: 256, count: 128 }],
      });
    });

    await t.step("snapshot create, add, list, take, info", async () => {
      await client.devices.attach({ path: await makeDisk("vdb.img", MIB), name: "vdb" });
      const created = json(
        await cli(
          "snapshot",
          "create",
          "--device",
          "vda",
          "--storage",
          join(allowed, "diff"),
          "--limit",
          "4M",
          "--json",
        ),
      ) as { id: string; state: string; storage: { limitBytes: number } };
      snapshotId = created.id;
      assert.equal(created.state, "created");
      assert.equal(created.storage.limitBytes, 4 * MIB);
      const added = json(await cli("snapshot", "add", snapshotId, "vdb", "--json")) as {
        devices: Array<{ deviceId: string }>;
      };
      assert.deepEqual(added.devices.map((d) => d.deviceId), ["vda", "vdb"]);
      assert.deepEqual(json(await cli("snapshot", "list", "--json")), [added]);
      const taken = json(await cli("snapshot", "take", snapshotId, "--json")) as { state: string };
      assert.equal(taken.state, "taken");
      assert.deepEqual(json(await cli("snapshot", "info", snapshotId, "--json")), taken);
      const human = await cli("snapshot", "info", snapshotId);
      assert.match(human.stdout, new RegExp(`^snapshot ${snapshotId}$`, "m"));
      assert.match(human.stdout, /^ {2}state {5}taken$/m);
      const { devices } = await client.snapshots.get(snapshotId);
      for (const { changeToken } of devices) {
        assert.ok(changeToken);
        assert.match(human.stdout, new RegExp(`^ +change token ${changeToken}$`, "m"));
      }
      assert.deepEqual(nonZero(await client.cbt.map("vda")), [0, 2], "markdirty took effect");
    });

    await t.step("image locate, read to a file and to stdout, changes", async () => {
      const locator = json(await cli("image", "locate", snapshotId, "vda", "--json"));
      assert.deepEqual(locator, await client.images.locator(snapshotId, "vda"));
      const out = join(root, "image.bin");
      const readResult = await cli("image", "read", snapshotId, "vda", "-o", out, "--json");
      const report = json(readResult) as { bytes: number; output: string; via: string };
      assert.deepEqual([report.bytes, report.output, report.via], [SIZE, out, "HTTP"]);
      assert.equal(readResult.stderr, "", "no progress bar when stderr is not a terminal");
      assert.deepEqual(await Deno.readFile(out), content);
      if (terminalAvailable()) {
        await Deno.remove(out);
        const shown = await runCliOnTerminal(["image", "read", snapshotId, "vda", "-o", out], env);
        assert.equal(shown.code, 0, shown.stdout + shown.stderr);
        assert.match(shown.stdout, /\r\[#{30}\] 100% 2\.0 MiB of 2\.0 MiB .*ETA 0s/);
        assert.match(shown.stdout, new RegExp(`wrote ${SIZE} bytes to ${out}`));
        assert.deepEqual(await Deno.readFile(out), content);
      } else {
        console.log("skipping the progress bar check: util-linux script is not installed");
      }
      const toStdout = await cli(
        "image",
        "read",
        snapshotId,
        "vda",
        "--offset",
        "1000",
        "--length",
        "70000",
      );
      assert.equal(toStdout.code, 0, toStdout.stderr);
      assert.deepEqual(toStdout.stdoutBytes, content.subarray(1000, 71000));
      assert.match(toStdout.stderr, /read 70000 bytes/);
      const located = await cli("image", "locate", snapshotId, "vda");
      assert.match(located.stdout, new RegExp(`^change token ${locator.changeToken}$`, "m"));
      const refused = await cli("image", "changes", snapshotId, "vda");
      assert.equal(refused.code, 3, "the first snapshot has nothing to be relative to");
      assert.match(refused.stderr, /\(FULL_BACKUP_REQUIRED, ESTALE, generation_changed\)\n$/);
      const { generationId } = await client.cbt.info("vda");
      const args = ["image", "changes", snapshotId, "vda", "--since", "0"];
      const changes = json(await cli(...args, "--generation", generationId, "--json")) as {
        extents: unknown[];
      };
      assert.deepEqual(changes.extents, [
        { offset: 0, length: API_BLOCK_BYTES },
        { offset: 2 * API_BLOCK_BYTES, length: API_BLOCK_BYTES },
      ]);
      assert.deepEqual(
        changes,
        await client.images.changes(snapshotId, "vda", { since: 0, generation: generationId }),
      );
      const own = await cli("image", "changes", snapshotId, "vda", "--since", locator.changeToken!);
      assert.equal(own.code, 3);
      assert.match(own.stderr, /not_earlier\)\n$/);
      const bare = await cli(...args);
      assert.equal(bare.code, 3);
      assert.match(bare.stderr, /malformed\)\n$/);
    });

    await t.step("snapshot waitevent times out with no events; destroy; detach", async () => {
      const page = json(
        await cli("snapshot", "waitevent", snapshotId, "--timeout", "100", "--json"),
      ) as { events: unknown[]; lastId: number; truncated: boolean };
      assert.deepEqual([page.events, page.truncated], [[], false]);
      const human = await cli("snapshot", "waitevent", snapshotId, "--timeout", "50");
      assert.equal(human.stdout, `no event within 50 ms (last id ${page.lastId})\n`);
      assert.deepEqual(json(await cli("snapshot", "destroy", snapshotId, "--json")), {
        destroyed: snapshotId,
      });
      const gone = await cli("snapshot", "info", snapshotId);
      assert.equal(gone.code, 3);
      assert.match(gone.stderr, /\(NOT_FOUND, ENOENT\)/);
      assert.deepEqual(json(await cli("detach", "vda", "--json")), { detached: "vda" });
      await client.devices.detach("vdb");
      assert.deepEqual(await client.devices.list(), []);
    });
  });
});

Deno.test({
  name: "CLI snapshot waitevent and watch print the events of an overflowing snapshot",
  ignore: toolsMissing("nbdsh"),
  async fn() {
    await withService({}, async ({ baseUrl, client, makeDisk, allowed, root }) => {
      const env = { BLKSNAP_URL: baseUrl };
      const device = await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
      const snapshot = await client.snapshots.create({
        devices: ["a"],
        diffStorage: { path: join(allowed, "diff"), limitBytes: 2 * API_BLOCK_BYTES },
      });
      await client.snapshots.take(snapshot.id);
      const waiting = runCli(
        ["snapshot", "waitevent", snapshot.id, "--timeout", "20000", "--json"],
        env,
      );
      await nbdWrite(
        device.locator,
        [0, 1, 2, 3].map((chunk) => ({
          offset: chunk * API_BLOCK_BYTES,
          data: pattern(512, chunk),
        })),
        { scratchDir: root },
      );
      const polled = json(await waiting) as { events: Array<{ code: string; id: number }> };
      assert.equal(polled.events[0].code, "no_space");
      await using watch = new RunningCli(["snapshot", "watch", snapshot.id, "--json"], env);
      // Destroy once the watch has had both events from the log (it starts from the first).
      const delivered = new RegExp(
        `^blksnap_events_delivered_total ${polled.events.length + 2}$`,
        "m",
      );
      for (let i = 0; !delivered.test(await client.metrics()); i++) {
        assert.ok(i < 1000, "the watch did not get both events");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await client.snapshots.destroy(snapshot.id);
      const result = await watch.finished();
      assert.equal(result.code, 0, result.stderr);
      const lines = result.stdout.trim().split("\n").map((line) => JSON.parse(line));
      assert.deepEqual(lines.map((l) => l.code), ["no_space", "corrupted"], result.stdout);
      assert.equal(lines[0].id, polled.events[0].id, "the same event, with its id");
      assert.equal(lines[1].errorName, "ENOSPC");
      assert.equal(lines[1].deviceId, "a");
    });
  },
});

Deno.test("CLI --token-file and BLKSNAP_TOKEN reach a service that requires a token", async () => {
  await withService({ token: "cli-token" }, async ({ baseUrl, root }) => {
    const tokenFile = join(root, "token");
    await Deno.writeTextFile(tokenFile, "cli-token\n");
    const withFile = await runCli([
      "devices",
      "--json",
      "--url",
      baseUrl,
      "--token-file",
      tokenFile,
    ]);
    assert.deepEqual(json(withFile), []);
    assert.deepEqual(
      json(
        await runCli(["devices", "--json"], { BLKSNAP_URL: baseUrl, BLKSNAP_TOKEN: "cli-token" }),
      ),
      [],
    );
    assert.deepEqual(
      json(
        await runCli(["devices", "--json"], {
          BLKSNAP_URL: baseUrl,
          BLKSNAP_TOKEN_FILE: tokenFile,
        }),
      ),
      [],
    );
    const refused = await runCli(["devices", "--url", baseUrl]);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /bearer token.*\(UNAUTHORIZED, EACCES\)/);
    const missingFile = await runCli([
      "devices",
      "--url",
      baseUrl,
      "--token-file",
      join(root, "nope"),
    ]);
    assert.equal(missingFile.code, 2);
    assert.match(missingFile.stderr, /Cannot read the token file/);
  });
});

const commands = [
  "serve",
  "version",
  "attach",
  "detach",
  "devices",
  "cbtinfo",
  "readcbtmap",
  "markdirty",
  "snapshot",
  "image",
];

Deno.test("CLI --help on every command prints its usage and exits 0", async () => {
  const top = await runCli(["--help"]);
  assert.equal(top.code, 0);
  for (const name of commands) assert.match(top.stdout, new RegExp(`^  ${name} `, "m"));
  assert.match(top.stdout, /Exit status: 0 ok, 1 failure, 2 usage error, 3 refused/);
  const results = await Promise.all(commands.map((name) => runCli([name, "--help"])));
  results.forEach((result, i) => {
    assert.equal(result.code, 0, `${commands[i]} --help: ${result.stderr}`);
    assert.match(result.stdout, new RegExp(`^Usage: blksnap ${commands[i]}\\b`), commands[i]);
    assert.equal(result.stderr, "");
  });
  const verbs = await Promise.all([
    runCli(["snapshot", "take", "--help"]),
    runCli(["image", "read", "-h"]),
  ]);
  for (const verb of verbs) assert.match(verb.stdout, /^Usage: blksnap (snapshot|image) VERB/);
});

Deno.test("CLI exit codes: 2 for usage errors, 4 when the service is unreachable", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closed = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  listener.close();
  const usage: string[][] = [
    [],
    ["frobnicate"],
    ["version", "--bogus"],
    ["attach"],
    ["readcbtmap", "vda"],
    ["markdirty", "vda"],
    ["markdirty", "vda", "--range", "1"],
    ["markdirty", "vda", "--range", "x:1"],
    ["snapshot"],
    ["snapshot", "explode", "x"],
    ["snapshot", "create", "--device", "a", "--storage", "/tmp/x"],
    ["snapshot", "create", "--device", "a", "--storage", "/tmp/x", "--limit", "lots"],
    ["snapshot", "take"],
    ["image", "read", "s"],
    ["image", "read", "s", "d", "--length", "0"],
    ["image", "explode", "s", "d"],
    ["version", "--url", "not a url"],
    ["serve", "--listen", "nowhere"],
    ["serve", "--backend", "magic"],
  ];
  const results = await Promise.all(usage.map((args) => runCli(args, { BLKSNAP_URL: closed })));
  results.forEach((result, i) => {
    assert.equal(result.code, 2, `${usage[i].join(" ")}: ${result.stdout}${result.stderr}`);
    // A bare command group prints its usage; everything else says what is wrong.
    const said = result.stderr || result.stdout;
    assert.match(said, /^(blksnap: |Usage: blksnap)/, usage[i].join(" "));
  });
  const unreachable = await Promise.all(
    [["version"], ["devices", "--json"], ["snapshot", "list"], ["image", "changes", "s", "d"]].map((
      args,
    ) => runCli([...args, "--url", closed])),
  );
  for (const result of unreachable) {
    assert.equal(result.code, 4, result.stderr);
    assert.match(result.stderr, new RegExp(`Cannot reach the service at ${closed}`));
    assert.equal(result.stdout, "");
  }
});
