/**
 * How a Worker names a connection's peer and decides whether it is on this
 * host (src/nbd/worker/peer.ts), on real accepted sockets.
 */

import assert from "node:assert/strict";
import { libc, Sys } from "../../src/nbd/worker/libc.ts";
import { listenTcp, listenUnix } from "../../src/nbd/worker/listen_socket.ts";
import { describePeer } from "../../src/nbd/worker/peer.ts";

/**
 * Runs `check` on one connection accepted on `listener` (made by `connect`):
 * its descriptor and peer address; closes the client, the descriptor and
 * the listener after.
 */
async function withAccepted(
  listener: { fd: number },
  connect: () => Promise<Deno.Conn>,
  check: (fd: number, address: Uint8Array) => void,
): Promise<void> {
  const client = await connect();
  const address = new Uint8Array(112);
  const length = new Uint32Array([address.length]);
  const fd = libc().accept4(listener.fd, address, new Uint8Array(length.buffer), Sys.SOCK_CLOEXEC);
  try {
    assert.ok(fd >= 0, "accept4 failed");
    check(fd, address);
  } finally {
    client.close();
    if (fd >= 0) libc().close(fd);
    libc().close(listener.fd);
  }
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
    await withAccepted(
      listener,
      () => Deno.connect({ hostname: "127.0.0.1", port: listener.port! }),
      (fd, address) => {
        const described = describePeer(libc(), fd, address);
        assert.equal(described.hostLocal, true);
        assert.match(described.peer, /^127\.0\.0\.1:\d+$/);
      },
    );
  });

  await t.step("a Unix socket is on this host", async () => {
    const dir = await Deno.makeTempDir();
    try {
      await withAccepted(
        listenUnix(`${dir}/nbd.sock`),
        () => Deno.connect({ transport: "unix", path: `${dir}/nbd.sock` }),
        (fd, address) => {
          assert.deepEqual(describePeer(libc(), fd, address), {
            peer: "unix socket",
            hostLocal: true,
          });
        },
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  const own = ownAddress();
  await t.step({
    name: "a connection to this host's own address is on this host",
    ignore: own === undefined,
    fn: async () => {
      const listener = listenTcp(own!, 0);
      await withAccepted(
        listener,
        () => Deno.connect({ hostname: own!, port: listener.port! }),
        (fd, address) => {
          const described = describePeer(libc(), fd, address);
          assert.equal(described.peer.split(":")[0], own);
          assert.equal(described.hostLocal, true);
        },
      );
    },
  });

  await t.step("a peer address that is neither loopback nor the socket's own is not", async () => {
    const listener = listenTcp("127.0.0.1", 0);
    await withAccepted(
      listener,
      () => Deno.connect({ hostname: "127.0.0.1", port: listener.port! }),
      (fd) => {
        // The real socket's local address is 127.0.0.1; the peer given is 192.0.2.7:5000.
        const foreign = new Uint8Array(16);
        new DataView(foreign.buffer).setUint16(0, Sys.AF_INET, true);
        new DataView(foreign.buffer).setUint16(2, 5000, false);
        foreign.set([192, 0, 2, 7], 4);
        assert.deepEqual(describePeer(libc(), fd, foreign), {
          peer: "192.0.2.7:5000",
          hostLocal: false,
        });
      },
    );
  });
});
