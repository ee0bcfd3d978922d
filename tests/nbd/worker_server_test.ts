/**
 * The Worker plane's own rules (src/nbd/worker/worker_server.ts): the pool
 * grows while connections wait; at its bound, a waiting connection is
 * refused (closed) instead of left hanging; an idle connection is dropped
 * while the pool is saturated, so a hostile idle client cannot hold a
 * Worker forever; requests keep their answers throughout.
 */

import assert from "node:assert/strict";
import { Command as C } from "../../src/nbd/constants.ts";
import { staticProvider } from "../../src/nbd/export.ts";
import { type NbdServer, type NbdServerOptions, startNbdServer } from "../../src/nbd/server.ts";
import { MemoryExport } from "../_helpers/nbd_exports.ts";
import { waitFor } from "../_helpers/nbd_fixture.ts";
import { RawNbdClient } from "../_helpers/nbd_raw_client.ts";

const MiB = 1024 * 1024;

async function withPlane(
  options: Omit<NbdServerOptions, "tcp">,
  body: (server: NbdServer, warnings: string[]) => Promise<void>,
): Promise<void> {
  const warnings: string[] = [];
  const disk = new MemoryExport({ name: "disk", sizeBytes: MiB });
  disk.fill(0, new Uint8Array(4096).fill(0x5a));
  const server = await startNbdServer(staticProvider([disk]), {
    tcp: { port: 0 },
    logger: (level, message) => level === "warn" && warnings.push(message),
    ...options,
  });
  try {
    await body(server, warnings);
  } finally {
    await server.close();
  }
}

async function readsBack(client: RawNbdClient, cookie: bigint): Promise<void> {
  await client.request({ type: C.NBD_CMD_READ, cookie, length: 4096 });
  const reply = await client.reply(new Map([[cookie, 4096]]));
  assert.equal(reply.error, 0);
  assert.ok(reply.payload.every((b) => b === 0x5a));
}

Deno.test("worker plane: the pool grows so that more connections than Workers are all served, and counted", async () => {
  await withPlane({ workers: 1, maxWorkers: 4 }, async (server) => {
    const clients = await Promise.all(
      [0, 1, 2, 3].map(() => RawNbdClient.connect({ port: server.tcpPort! })),
    );
    try {
      await Promise.all(clients.map((client) => client.handshake("disk")));
      await Promise.all(clients.map((client, i) => readsBack(client, BigInt(i + 1))));
      assert.equal(server.connections, 4);
      assert.equal(server.stats.connectionsTotal, 4);
      // A Worker counts a request right after its reply has left: wait for the last counts.
      await waitFor(() => server.stats.requests().read === 4);
      assert.equal(server.stats.bytes().read, 4 * 4096, "every Worker's counts reach the server's");
    } finally {
      clients.forEach((client) => client.close());
    }
  });
});

Deno.test("worker plane: at its bound a waiting connection is refused, not left hanging", async () => {
  await withPlane({ workers: 1, maxWorkers: 1 }, async (server, warnings) => {
    const first = await RawNbdClient.connect({ port: server.tcpPort! });
    const second = await RawNbdClient.connect({ port: server.tcpPort! });
    try {
      await first.handshake("disk");
      assert.ok(await second.closedByServer(), "the second connection is closed");
      assert.match(warnings.join("\n"), /refused a connection: all 1 Workers are busy/);
      await readsBack(first, 1n);
      await first.disconnect();
      first.close();
      const third = await RawNbdClient.connect({ port: server.tcpPort! });
      try {
        await third.handshake("disk");
        await readsBack(third, 2n);
      } finally {
        third.close();
      }
    } finally {
      first.close();
      second.close();
    }
  });
});

Deno.test("worker plane: an idle connection is dropped while every Worker is busy", async () => {
  await withPlane({ workers: 1, maxWorkers: 1, idleTimeoutMs: 300 }, async (server, warnings) => {
    const idle = await RawNbdClient.connect({ port: server.tcpPort! });
    try {
      await idle.handshake("disk");
      await readsBack(idle, 1n);
      assert.ok(await idle.closedByServer(), "the idle connection is closed");
      assert.match(warnings.join("\n"), /idle for \d+ s while every Worker is busy/);
      const next = await RawNbdClient.connect({ port: server.tcpPort! });
      try {
        await next.handshake("disk");
        await readsBack(next, 2n);
      } finally {
        next.close();
      }
    } finally {
      idle.close();
    }
  });
});

Deno.test("worker plane: an idle connection stays while a Worker is free", async () => {
  await withPlane({ workers: 2, maxWorkers: 2, idleTimeoutMs: 100 }, async (server) => {
    const idle = await RawNbdClient.connect({ port: server.tcpPort! });
    try {
      await idle.handshake("disk");
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await readsBack(idle, 1n);
    } finally {
      idle.close();
    }
  });
});

Deno.test("worker plane: without --allow-ffi the server refuses to start with UNAVAILABLE", async () => {
  const dir = await Deno.makeTempDir({ prefix: "worker-ffi-" });
  const server = new URL("../../src/nbd/server.ts", import.meta.url).href;
  await Deno.writeTextFile(
    `${dir}/start.ts`,
    `import { startNbdServer } from ${JSON.stringify(server)};
    try {
      await startNbdServer({ list: () => [], get: () => undefined }, { tcp: { port: 0 }, workers: 1 });
      console.log("started");
    } catch (error) {
      console.log(error.code, error.message);
    }
    Deno.exit(0);`,
  );
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-read", "--allow-net", `${dir}/start.ts`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout);
    assert.match(text, /^UNAVAILABLE Cannot start NBD Workers: libc cannot be opened through FFI/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
