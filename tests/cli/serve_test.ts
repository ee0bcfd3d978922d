import assert from "node:assert/strict";
import { join } from "node:path";
import { createClient } from "../../src/client/client.ts";
import { runCli, RunningCli } from "../_helpers/api_cli.ts";
import { rejectsWithProblem } from "../_helpers/api_problem.ts";
import { writeDisk } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const kernelModulePresent = ["/dev/veeamblksnap", "/dev/blksnap-control"].some((path) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
});
if (kernelModulePresent) {
  console.log(
    "skipping the auto-backend and missing-module serve tests: a blksnap module is loaded",
  );
}

async function withTempDir(body: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-serve-" }));
  try {
    await body(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Waits for the HTTP API line of a starting `serve` and returns its URL (on 127.0.0.1). */
async function apiUrl(serve: RunningCli, token: "required" | "not required"): Promise<string> {
  const [, port] = await serve.waitForStderr(
    new RegExp(`^HTTP API on http://[^ ]+:(\\d+)/v1 \\(bearer token ${token}\\)$`),
  );
  return `http://127.0.0.1:${port}`;
}

Deno.test({
  name:
    "serve runs from BLKSNAP_* variables alone, logs its addresses and backend, stops on SIGTERM, re-attaches devices with their CBT after a restart",
  ignore: kernelModulePresent,
  async fn() {
    await withTempDir(async (root) => {
      const disks = join(root, "disks");
      const other = join(root, "other");
      const stateDir = join(root, "state");
      await Deno.mkdir(disks);
      await Deno.mkdir(other);
      const disk = join(disks, "vm.img");
      await writeDisk(disk, MIB, { seed: 3 });
      const env = {
        BLKSNAP_LISTEN: "127.0.0.1:0",
        BLKSNAP_STATE_DIR: stateDir,
        BLKSNAP_ALLOW_PATH: `${disks}:${other}`,
        BLKSNAP_NBD_LISTEN: "127.0.0.1:0",
      };
      let generation = "";
      {
        await using serve = new RunningCli(["serve"], env);
        const baseUrl = await apiUrl(serve, "not required");
        await serve.waitForStderr(new RegExp(`^allowed paths: ${disks}, ${other}$`));
        await serve.waitForStderr(new RegExp(`^blksnap service \\S+, state in ${stateDir}$`));
        await serve.waitForStderr(/^backend: userspace \(auto: no \/dev\/veeamblksnap/);
        const [, nbdPort] = await serve.waitForStderr(
          /^NBD exports on nbd:\/\/127\.0\.0\.1:(\d+)\/<device>$/,
        );
        const client = createClient({ baseUrl });
        assert.equal((await client.version()).backend, "userspace");
        const device = await client.devices.attach({ path: disk, name: "vm" });
        assert.equal(device.locator, `nbd://127.0.0.1:${nbdPort}/vm`);
        generation = (await client.cbt.info("vm")).generationId;
        await rejectsWithProblem(client.devices.attach({ path: join(root, "state") }), {
          status: 403,
          code: "FORBIDDEN",
          field: "path",
        });
        serve.kill("SIGTERM");
        const stopped = await serve.finishedWithin(10_000);
        assert.equal(stopped.code, 0, stopped.stderr);
        assert.match(stopped.stderr, /^shutting down$/m);
        await assert.rejects(createClient({ baseUrl, retries: 0 }).version());
      }
      {
        // The other variables: backend, token file, NBD on a Unix socket only.
        const tokenFile = join(root, "token");
        await Deno.writeTextFile(tokenFile, "env-token\n");
        const socket = join(root, "nbd.sock");
        await using serve = new RunningCli(["serve"], {
          ...env,
          BLKSNAP_BACKEND: "userspace",
          BLKSNAP_TOKEN_FILE: tokenFile,
          BLKSNAP_NBD_LISTEN: "off",
          BLKSNAP_NBD_SOCKET: socket,
        });
        const baseUrl = await apiUrl(serve, "required");
        const client = createClient({ baseUrl, token: "env-token" });
        await serve.waitForStderr(/^backend: userspace \(--backend\)$/);
        await serve.waitForStderr(/re-attached vm \(.*vm\.img\) with its CBT generation kept/);
        const [device] = await client.devices.list();
        assert.equal(device.id, "vm");
        assert.equal(device.path, disk);
        assert.equal(device.locator, `nbd+unix:///vm?socket=${socket}`);
        await rejectsWithProblem(createClient({ baseUrl }).version(), {
          status: 401,
          code: "UNAUTHORIZED",
          errno: "EACCES",
        });
        assert.equal((await client.cbt.info("vm")).generationId, generation);
        serve.kill("SIGINT");
        assert.equal((await serve.finishedWithin(10_000)).code, 0);
      }
    });
  },
});

Deno.test({
  name: "serve --backend kernel without the module fails at start, naming what is missing",
  ignore: kernelModulePresent,
  async fn() {
    await withTempDir(async (root) => {
      const result = await runCli([
        "serve",
        "--backend",
        "kernel",
        "--state-dir",
        join(root, "state"),
        "--listen",
        "127.0.0.1:0",
        "--nbd-listen",
        "off",
      ]);
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /^backend: kernel \(--backend\)$/m);
      assert.match(
        result.stderr,
        /\/dev\/veeamblksnap and \/dev\/blksnap-control are absent: load .*veeamblksnap.*blksnap module/,
      );
      assert.doesNotMatch(result.stderr, /HTTP API on/);
    });
  },
});

Deno.test("serve refuses to listen beyond loopback without a token, and requires it when given", async () => {
  await withTempDir(async (root) => {
    const stateDir = join(root, "state");
    for (
      const [args, env] of [
        [["serve", "--listen", "0.0.0.0:0", "--state-dir", stateDir], {}],
        [["serve", "--state-dir", stateDir], { BLKSNAP_LISTEN: "0.0.0.0:0" }],
      ] as const
    ) {
      const refused = await runCli([...args], env);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /0\.0\.0\.0 \(not loopback\) requires a bearer token/);
    }
    const empty = join(root, "empty-token");
    await Deno.writeTextFile(empty, "\n");
    const emptyToken = await runCli(["serve", "--token-file", empty, "--state-dir", stateDir]);
    assert.equal(emptyToken.code, 2);
    assert.match(emptyToken.stderr, /token file .* is empty/);

    const tokenFile = join(root, "token");
    await Deno.writeTextFile(tokenFile, "serve-token\n");
    const socket = join(root, "nbd.sock");
    await using serve = new RunningCli([
      "serve",
      "--listen",
      "0.0.0.0:0",
      "--token-file",
      tokenFile,
      "--state-dir",
      stateDir,
      "--allow-path",
      root,
      "--nbd-listen",
      "off",
      "--nbd-socket",
      socket,
    ]);
    const baseUrl = await apiUrl(serve, "required");
    await serve.waitForStderr(
      new RegExp(`^NBD exports on nbd\\+unix:///<device>\\?socket=${socket}$`),
    );
    const anonymous = await fetch(`${baseUrl}/v1/version`);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get("www-authenticate"), 'Bearer realm="blksnap"');
    await anonymous.body?.cancel();
    const client = createClient({ baseUrl, token: "serve-token" });
    await writeDisk(join(root, "d.img"), MIB);
    const device = await client.devices.attach({ path: join(root, "d.img") });
    assert.equal(device.locator, `nbd+unix:///d.img?socket=${socket}`);
    serve.kill("SIGTERM");
    assert.equal((await serve.finishedWithin(10_000)).code, 0);
    assert.throws(() => Deno.statSync(socket), Deno.errors.NotFound, "the socket is removed");
  });
});

Deno.test("SIGTERM ends serve while an event stream and a long poll are open", async () => {
  await withTempDir(async (root) => {
    await using serve = new RunningCli([
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--nbd-listen",
      "127.0.0.1:0",
      "--state-dir",
      join(root, "state"),
      "--allow-path",
      root,
    ]);
    const baseUrl = await apiUrl(serve, "not required");
    const client = createClient({ baseUrl });
    await writeDisk(join(root, "d.img"), MIB);
    await client.devices.attach({ path: join(root, "d.img"), name: "d" });
    const snapshot = await client.snapshots.create({
      devices: ["d"],
      diffStorage: { path: join(root, "diff"), limitBytes: MIB },
    });
    // The stream's headers have come back: the service holds it open.
    const stream = await fetch(`${baseUrl}/v1/snapshots/${snapshot.id}/events/stream`);
    assert.equal(stream.status, 200);
    const streamText = stream.text();
    const polling = client.snapshots.waitEvents(snapshot.id, { timeoutMs: 60_000 }).then(
      (page) => page.events.length === 0 ? undefined : page,
      (error) => error,
    );
    serve.kill("SIGTERM");
    const stopped = await serve.finishedWithin(10_000);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(await streamText, /^event: end$/m, "the stream ended with the snapshot");
    const polled = await polling;
    assert.ok(polled === undefined || polled instanceof Error, String(polled));
  });
});

Deno.test("serve fails at start with a plain message when its ports are taken or a prefix is missing", async () => {
  await withTempDir(async (root) => {
    const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (busy.addr as Deno.NetAddr).port;
    try {
      const common = ["serve", "--backend", "userspace", "--state-dir", join(root, "state")];
      const http = await runCli([
        ...common,
        "--listen",
        `127.0.0.1:${port}`,
        "--nbd-listen",
        "127.0.0.1:0",
      ]);
      assert.equal(http.code, 1, http.stderr);
      assert.match(
        http.stderr,
        new RegExp(`^blksnap: Cannot listen on 127\\.0\\.0\\.1:${port}: `, "m"),
      );
      assert.doesNotMatch(http.stderr, /\n\s+at /, "no stack trace");
      const nbd = await runCli([
        ...common,
        "--listen",
        "127.0.0.1:0",
        "--nbd-listen",
        `127.0.0.1:${port}`,
      ]);
      assert.equal(nbd.code, 1, nbd.stderr);
      assert.match(
        nbd.stderr,
        new RegExp(`^blksnap: Cannot listen on 127\\.0\\.0\\.1:${port}: `, "m"),
      );
      const prefix = await runCli([
        ...common,
        "--listen",
        "127.0.0.1:0",
        "--nbd-listen",
        "127.0.0.1:0",
        "--allow-path",
        join(root, "no-such-folder"),
      ]);
      assert.equal(prefix.code, 2, prefix.stderr);
      assert.match(prefix.stderr, /Cannot allow paths under .*no-such-folder/);
    } finally {
      busy.close();
    }
  });
});
