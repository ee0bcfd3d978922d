/**
 * How a Worker names a connection's peer and decides whether it is on this
 * host (src/nbd/worker/peer.ts), on real accepted sockets.
 */

import assert from "node:assert/strict";
import { libc, Sys } from "../../src/nbd/worker/libc.ts";
import { listenTcp, listenUnix } from "../../src/nbd/worker/listen_socket.ts";
import { describePeer } from "../../src/nbd/worker/peer.ts";

/** Accepts one connection on `listenFd` made by `connect`; the descriptor and the peer address. */
async function acceptOne(listenFd: number, connect: () => Promise<Deno.Conn>) {
  const client = await connect();
  const address = new Uint8Array(112);
  const length = new Uint32Array([address.length]);
  const fd = libc().accept4(listenFd, address, new Uint8Array(length.buffer), Sys.SOCK_CLOEXEC);
  assert.ok(fd >= 0, "accept4 failed");
  return {
    fd,
    address,
    close() {
      client.close();
      libc().close(fd);
    },
  };
}

/** An IPv4 address of this host other than loopback, if it has one. */
function ownAddress(): string | undefined {
  return Deno.networkInterfaces().find((each) =>
    each.family === "IPv4" && !each.address.startsWith("127.")
  )?.address;
}

Deno.test("worker peer: loopback, Unix and own-address peers are on this host; a foreign one is not", async (t) => {
  await t.step("127.0.0.1 is on this host, named with its port", async () => {
    const listener = listenTcp("127.0.0.1", 0);
    const accepted = await acceptOne(
      listener.fd,
      () => Deno.connect({ hostname: "127.0.0.1", port: listener.port! }),
    );
    try {
      const described = describePeer(libc(), accepted.fd, accepted.address);
      assert.equal(described.hostLocal, true);
      assert.match(described.peer, /^127\.0\.0\.1:\d+$/);
    } finally {
      accepted.close();
      libc().close(listener.fd);
    }
  });

  await t.step("a Unix socket is on this host", async () => {
    const dir = await Deno.makeTempDir();
    const listener = listenUnix(`${dir}/nbd.sock`);
    const accepted = await acceptOne(
      listener.fd,
      () => Deno.connect({ transport: "unix", path: `${dir}/nbd.sock` }),
    );
    try {
      assert.deepEqual(describePeer(libc(), accepted.fd, accepted.address), {
        peer: "unix socket",
        hostLocal: true,
      });
    } finally {
      accepted.close();
      libc().close(listener.fd);
      await Deno.remove(dir, { recursive: true });
    }
  });

  const own = ownAddress();
  await t.step({
    name: "a connection to this host's own address is on this host",
    ignore: own === undefined,
    fn: async () => {
      const listener = listenTcp(own!, 0);
      const accepted = await acceptOne(
        listener.fd,
        () => Deno.connect({ hostname: own!, port: listener.port! }),
      );
      try {
        const described = describePeer(libc(), accepted.fd, accepted.address);
        assert.equal(described.peer.split(":")[0], own);
        assert.equal(described.hostLocal, true);
      } finally {
        accepted.close();
        libc().close(listener.fd);
      }
    },
  });

  await t.step("a peer address that is neither loopback nor the socket's own is not", async () => {
    const listener = listenTcp("127.0.0.1", 0);
    const accepted = await acceptOne(
      listener.fd,
      () => Deno.connect({ hostname: "127.0.0.1", port: listener.port! }),
    );
    try {
      // The real socket's local address is 127.0.0.1; the peer given is 192.0.2.7:5000.
      const foreign = new Uint8Array(16);
      new DataView(foreign.buffer).setUint16(0, Sys.AF_INET, true);
      new DataView(foreign.buffer).setUint16(2, 5000, false);
      foreign.set([192, 0, 2, 7], 4);
      assert.deepEqual(describePeer(libc(), accepted.fd, foreign), {
        peer: "192.0.2.7:5000",
        hostLocal: false,
      });
    } finally {
      accepted.close();
      libc().close(listener.fd);
    }
  });
});
