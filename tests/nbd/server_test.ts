import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { Command as C } from "../../src/nbd/constants.ts";
import { staticProvider } from "../../src/nbd/export.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryExport } from "../_helpers/nbd_exports.ts";
import { waitFor, withNbdServer } from "../_helpers/nbd_fixture.ts";
import { RawNbdClient } from "../_helpers/nbd_raw_client.ts";
import { nbdTestWorkers } from "../_helpers/nbd_workers_mode.ts";

const MiB = 1024 * 1024;

Deno.test("server: counts connections over TCP and the Unix socket", async () => {
  await withNbdServer([new MemoryExport({ name: "disk", sizeBytes: MiB })], async (fixture) => {
    const clients = await Promise.all([
      RawNbdClient.connect({ port: fixture.server.tcpPort! }),
      RawNbdClient.connect({ port: fixture.server.tcpPort! }),
      RawNbdClient.connect({ path: fixture.server.unixPath! }),
    ]);
    await Promise.all(clients.map((c) => c.handshake("disk")));
    assert.equal(fixture.server.connections, 3);
    for (const client of clients) {
      await client.disconnect();
      assert.ok(await client.closedByServer());
      client.close();
    }
    await waitFor(() => fixture.server.connections === 0);
  });
});

Deno.test("server: close() answers requests in flight, then closes connections and listeners", async () => {
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB, readDelayMs: 150 });
  disk.fill(0, new Uint8Array(4096).fill(0x42));
  const dir = await Deno.makeTempDir();
  const server = await startNbdServer(staticProvider([disk]), {
    tcp: { port: 0 },
    unixPath: `${dir}/s.sock`,
    workers: nbdTestWorkers(),
  });
  const client = await RawNbdClient.connect({ port: server.tcpPort! });
  const idle = await RawNbdClient.connect({ path: server.unixPath! });
  try {
    await client.handshake("disk");
    await idle.greeting();
    await client.request({ type: C.NBD_CMD_READ, cookie: 1n, length: 4096 });
    await new Promise((r) => setTimeout(r, 20));
    await server.close();
    const reply = await client.reply(new Map([[1n, 4096]]));
    assert.equal(reply.error, 0);
    assert.ok(reply.payload.every((b) => b === 0x42));
    assert.ok(await client.closedByServer());
    assert.ok(await idle.closedByServer());
    assert.equal(server.connections, 0);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.tcpPort! }));
    await assert.rejects(Deno.lstat(`${dir}/s.sock`), Deno.errors.NotFound);
  } finally {
    client.close();
    idle.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: refuses to start without a listener, on an existing path or a taken port", async () => {
  const provider = staticProvider([new MemoryExport({ name: "disk", sizeBytes: MiB })]);
  await assert.rejects(
    startNbdServer(provider, { workers: nbdTestWorkers() }),
    (e) => isServiceError(e, "INVALID_ARGUMENT"),
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/taken`, "");
    await assert.rejects(
      startNbdServer(provider, { unixPath: `${dir}/taken`, workers: nbdTestWorkers() }),
      (e) => isServiceError(e, "CONFLICT"),
    );
    const first = await startNbdServer(provider, { tcp: { port: 0 }, workers: nbdTestWorkers() });
    try {
      await assert.rejects(
        startNbdServer(provider, {
          tcp: { port: first.tcpPort! },
          unixPath: `${dir}/other`,
          workers: nbdTestWorkers(),
        }),
        (e) => isServiceError(e, "CONFLICT"),
      );
      await assert.rejects(Deno.lstat(`${dir}/other`), Deno.errors.NotFound);
    } finally {
      await first.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: a client that never chooses an export is disconnected after the timeout", async () => {
  const warnings: string[] = [];
  const server = await startNbdServer(
    staticProvider([new MemoryExport({ name: "disk", sizeBytes: MiB })]),
    {
      tcp: { port: 0 },
      handshakeTimeoutMs: 200,
      workers: nbdTestWorkers(),
      logger: (level, message) => level === "warn" && warnings.push(message),
    },
  );
  const idle = await RawNbdClient.connect({ port: server.tcpPort! });
  const chosen = await RawNbdClient.connect({ port: server.tcpPort! });
  try {
    await idle.greeting();
    await chosen.handshake("disk");
    assert.ok(await idle.closedByServer());
    assert.match(warnings.join("\n"), /no export chosen in time/);
    await chosen.request({ type: C.NBD_CMD_READ, cookie: 2n, length: 512 });
    assert.equal((await chosen.reply(new Map([[2n, 512]]))).error, 0, "chosen sessions stay");
  } finally {
    idle.close();
    chosen.close();
    await server.close();
  }
});
