/**
 * `serve` as an operator runs it: JSON logs, TLS with a certificate renewed on SIGHUP, the API
 * on a Unix socket, NBD with --nbd-listen off, and a restart after a crash left its sockets.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { RunningCli } from "../_helpers/api_cli.ts";
import { toolsMissing } from "../_helpers/nbd_fixture.ts";
import { writeDisk } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const moduleLoaded = ["/dev/veeamblksnap", "/dev/blksnap-control"].some((path) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
});

async function withTempDir(body: (root: string) => Promise<void>): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-operator-" }));
  try {
    await body(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

function baseEnv(root: string): Record<string, string> {
  return {
    BLKSNAP_STATE_DIR: join(root, "state"),
    BLKSNAP_LISTEN: "127.0.0.1:0",
    BLKSNAP_NBD_LISTEN: "127.0.0.1:0",
    BLKSNAP_BACKEND: "userspace",
  };
}

async function run(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  assert.equal(output.code, 0, `${command} ${args.join(" ")}: ${decoder.decode(output.stderr)}`);
  return decoder.decode(output.stdout);
}

/** A self-signed certificate for 127.0.0.1 with `name` as its common name. */
async function makeCertificate(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-addext",
    "subjectAltName=IP:127.0.0.1",
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  return { cert: await Deno.readTextFile(cert), key: await Deno.readTextFile(key) };
}

/** GET `url` trusting only `caCert`, on a fresh connection; the status, or the error's message. */
async function getTrusting(url: string, caCert: string): Promise<number | string> {
  using client = Deno.createHttpClient({ caCerts: [caCert] });
  try {
    const response = await fetch(url, { client });
    await response.body?.cancel();
    return response.status;
  } catch (error) {
    return `${(error as Error).message}: ${((error as Error).cause as Error)?.message}`;
  }
}

Deno.test({
  name: "serve --log-format json writes every line as JSON, the access log included",
  ignore: moduleLoaded,
  async fn() {
    await withTempDir(async (root) => {
      await using serve = new RunningCli(["serve", "--log-format", "json", "--log-level", "info"], {
        ...baseEnv(root),
      });
      const [, port] = await serve.waitForStderr(/"message":"HTTP API on http:\/\/[^"]+:(\d+)\/v1/);
      const response = await fetch(`http://127.0.0.1:${port}/v1/devices`);
      await response.body?.cancel();
      const id = response.headers.get("x-request-id")!;
      await serve.waitForStderr(new RegExp(`"requestId":"${id}"`));
      serve.kill("SIGTERM");
      const result = await serve.finished();
      assert.equal(result.code, 0, result.stderr);
      const records = result.stderr.trim().split("\n").map((line) => JSON.parse(line));
      for (const record of records) {
        assert.match(record.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.ok(["debug", "info", "warn", "error"].includes(record.level), record.level);
        assert.equal(typeof record.message, "string");
      }
      const access = records.find((r) => r.requestId === id);
      assert.equal(access.message, "GET /v1/devices 200");
      assert.equal(access.route, "listDevices");
      assert.ok(records.some((r) => r.message === "shutting down"));
    });
  },
});

Deno.test({
  name: "serve --tls-cert/--tls-key serves HTTPS and takes a renewed certificate on SIGHUP",
  ignore: moduleLoaded,
  async fn() {
    await withTempDir(async (root) => {
      const first = await makeCertificate(root, "first");
      const second = await makeCertificate(root, "second");
      const certFile = join(root, "api.crt");
      const keyFile = join(root, "api.key");
      await Deno.writeTextFile(certFile, first.cert);
      await Deno.writeTextFile(keyFile, first.key);
      await using serve = new RunningCli(
        ["serve", "--tls-cert", certFile, "--tls-key", keyFile],
        baseEnv(root),
      );
      const [, port] = await serve.waitForStderr(/HTTP API on https:\/\/127\.0\.0\.1:(\d+)\/v1/);
      const url = `https://127.0.0.1:${port}/healthz`;
      assert.equal(await getTrusting(url, first.cert), 200);
      assert.match(String(await getTrusting(url, second.cert)), /invalid peer certificate/);

      await Deno.writeTextFile(certFile, "not a certificate");
      serve.kill("SIGHUP");
      await serve.waitForStderr(/TLS reload failed; the previous certificate stays in use/);
      assert.equal(await getTrusting(url, first.cert), 200, "a bad file keeps the old one");

      await Deno.writeTextFile(certFile, second.cert);
      await Deno.writeTextFile(keyFile, second.key);
      serve.kill("SIGHUP");
      await serve.waitForStderr(/TLS certificate reloaded/);
      assert.equal(await getTrusting(url, second.cert), 200);
      assert.match(String(await getTrusting(url, first.cert)), /invalid peer certificate/);
      serve.kill("SIGTERM");
      assert.equal((await serve.finished()).code, 0);
    });
  },
});

Deno.test({
  name: "serve --listen unix:PATH: mode 0660, curl reaches the API, a stale socket is replaced",
  ignore: moduleLoaded || toolsMissing("curl"),
  async fn() {
    await withTempDir(async (root) => {
      const socket = join(root, "api.sock");
      const env = { ...baseEnv(root), BLKSNAP_LISTEN: `unix:${socket}` };
      {
        await using serve = new RunningCli(["serve"], env);
        await serve.waitForStderr(/HTTP API on unix:\S+ \(http:\/\/localhost\/v1 over the socket/);
        assert.equal((await Deno.stat(socket)).mode! & 0o777, 0o660);
        const version = JSON.parse(
          await run("curl", ["-sf", "--unix-socket", socket, "http://localhost/v1/version"]),
        );
        assert.equal(version.backend, "userspace");
        serve.kill("SIGKILL");
        await serve.finished();
      }
      assert.ok((await Deno.lstat(socket)).isSocket, "a killed process leaves its socket");
      await using again = new RunningCli(["serve"], env);
      await again.waitForStderr(/HTTP API on unix:/);
      assert.equal(
        JSON.parse(await run("curl", ["-sf", "--unix-socket", socket, "http://localhost/healthz"]))
          .status,
        "ok",
      );
      again.kill("SIGTERM");
      assert.equal((await again.finished()).code, 0);
      await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound, "removed at shutdown");
    });
  },
});

Deno.test({
  name: "serve --nbd-listen off: no TCP listener, the userspace backend serves NBD on its socket",
  ignore: moduleLoaded || toolsMissing("nbdinfo"),
  async fn() {
    await withTempDir(async (root) => {
      const env = { ...baseEnv(root), BLKSNAP_ALLOW_PATH: root };
      await writeDisk(join(root, "d.img"), MIB, { seed: 2 });
      await using serve = new RunningCli(["serve", "--nbd-listen", "off"], env);
      const socket = join(root, "state", "nbd.sock");
      await serve.waitForStderr(
        new RegExp(`NBD exports on nbd\\+unix:///<device>\\?socket=${socket}`),
      );
      const [, port] = await serve.waitForStderr(/HTTP API on http:\/\/127\.0\.0\.1:(\d+)\/v1/);
      assert.ok(!serve.stderrLines.some((line) => /nbd:\/\//.test(line)), "no TCP export");
      const response = await fetch(`http://127.0.0.1:${port}/v1/devices`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ path: join(root, "d.img"), name: "d" }),
      });
      const device = await response.json();
      assert.equal(response.status, 201);
      assert.equal(device.locator, `nbd+unix:///d?socket=${socket}`);
      const size = await run("nbdinfo", ["--size", device.locator]);
      assert.equal(size.trim(), String(MIB));
      serve.kill("SIGTERM");
      assert.equal((await serve.finished()).code, 0);
    });
  },
});
