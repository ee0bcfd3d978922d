/**
 * Issue 10, point 1: a low open-file limit and thousands of connections
 * neither end the service nor stop it answering. The service runs under
 * `prlimit --nofile=256` (so serve cannot raise its soft limit past 256).
 *
 * @module
 */

import assert from "node:assert/strict";
import { raiseOpenFileLimit } from "../../src/cli/open_file_limit.ts";
import { closeAll, figures, flood, probe, startServe, withRoot } from "./_serve.ts";
import { NbdClient } from "../_helpers/nbd_client.ts";

// The flood needs its own descriptors: thousands in this test process.
raiseOpenFileLimit();

async function version(baseUrl: string): Promise<number> {
  const response = await fetch(`${baseUrl}/v1/version`);
  await response.body?.cancel();
  return response.status;
}

Deno.test("at the open-file limit, accept backs off and the service answers again; no crash", async () => {
  await withRoot(async ({ allowed }) => {
    // More connections allowed than descriptors: accept itself hits EMFILE.
    await using serve = await startServe(allowed, {
      nofile: 256,
      args: [
        "--http-max-connections",
        "5000",
        "--nbd-max-connections",
        "5000",
        "--headers-timeout",
        "1500",
        // The main thread's NBD listener: it holds every connection, so it meets EMFILE (the
        // Worker plane holds at most 16 and refuses the rest).
        "--nbd-workers",
        "0",
      ],
    });
    const started = performance.now();
    const { conns, failed } = await flood(Number(new URL(serve.baseUrl).port), 2000, 1000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.ok(serve.alive(), `the service ended:\n${serve.stderr.join("\n")}`);
    // Bare connections that send nothing are dropped after the headers timeout, which
    // frees descriptors for the ones waiting in the backlog, and so on.
    const states = await Promise.all(conns.slice(0, 200).map((conn) => probe(conn, 4000)));
    closeAll(conns);
    assert.equal(await version(serve.baseUrl), 200, "answers once the flood is gone");
    // NBD too: idle clients that never finish the handshake, past the descriptor limit.
    const nbd = await flood(serve.nbdPort, 400, 1000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    closeAll(nbd.conns);
    assert.equal(await version(serve.baseUrl), 200, "answers after the NBD flood");
    assert.ok(serve.alive());
    assert.ok(
      serve.stderr.some((line) =>
        /\bhttp: accept failed, backing off: .*Too many open files/.test(line)
      ),
      `EMFILE was met and logged:\n${serve.stderr.slice(-5).join("\n")}`,
    );
    assert.ok(
      serve.stderr.some((line) =>
        /\bnbd: accept failed, backing off: .*Too many open files/.test(line)
      ),
      "the NBD listener met EMFILE too, and went on",
    );
    figures("emfile", {
      nofile: 256,
      nbdConnections: nbd.conns.length,
      connections: conns.length,
      connectFailures: failed,
      droppedByHeadersTimeout: states.filter((s) => s === "eof").length,
      probed: states.length,
      seconds: ((performance.now() - started) / 1000).toFixed(1),
      rssMiB: (serve.rssBytes() / 2 ** 20).toFixed(0),
    });
  });
});

Deno.test("over the connection limits: extra HTTP connections get 503, extra NBD ones are closed", async () => {
  await withRoot(async ({ allowed }) => {
    await using serve = await startServe(allowed, {
      nofile: 256,
      args: ["--http-max-connections", "100", "--nbd-max-connections", "50"],
    });
    const port = Number(new URL(serve.baseUrl).port);
    const { conns } = await flood(port, 1000);
    const extra = conns.slice(100);
    const answers = await Promise.all(
      extra.slice(0, 300).map(async (conn) => {
        const buffer = new Uint8Array(512);
        const n = await Promise.race([
          conn.read(buffer).catch(() => null),
          new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000)),
        ]);
        return n ? new TextDecoder().decode(buffer.subarray(0, n)) : "";
      }),
    );
    const refused = answers.filter((text) => /^HTTP\/1\.1 503 /.test(text)).length;
    assert.ok(refused >= 100, `${refused} of ${answers.length} extra connections got 503`);
    assert.ok(serve.alive());
    closeAll(conns);
    // NBD: 500 idle connections against a limit of 50.
    const nbd = await flood(serve.nbdPort, 500);
    const nbdStates = await Promise.all(nbd.conns.slice(100).map((conn) => probe(conn, 3000)));
    const closed = nbdStates.filter((s) => s === "eof").length;
    assert.ok(closed >= 300, `${closed} of ${nbdStates.length} extra NBD connections closed`);
    closeAll(nbd.conns);
    assert.equal(await version(serve.baseUrl), 200);
    // A real NBD client gets through once the idle ones are gone.
    await Deno.writeFile(`${allowed}/d.img`, new Uint8Array(1 << 20));
    const response = await fetch(`${serve.baseUrl}/v1/devices`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ path: `${allowed}/d.img`, name: "d" }),
    });
    assert.equal(response.status, 201, await response.clone().text());
    const { locator } = await response.json();
    const client = await NbdClient.connect(locator);
    assert.equal((await client.pread(0, 4096)).length, 4096);
    await client.close();
    figures("connection-limits", {
      httpConnections: conns.length,
      http503: refused,
      httpProbed: answers.length,
      nbdConnections: nbd.conns.length,
      nbdClosed: closed,
      nbdProbed: nbdStates.length,
      rssMiB: (serve.rssBytes() / 2 ** 20).toFixed(0),
    });
  });
});

Deno.test("serve raises the soft open-file limit to the hard one at start", async () => {
  await withRoot(async ({ allowed }) => {
    await using serve = await startServe(allowed, { nofileSoft: 100, nofile: 300 });
    assert.ok(
      serve.stderr.some((line) => line.includes("open-file limit: 300 (hard 300)")),
      serve.stderr.join("\n"),
    );
    const limits = await Deno.readTextFile(`/proc/${serve.pid}/limits`);
    assert.match(limits, /^Max open files\s+300\s+300\s+files/m);
  });
});
