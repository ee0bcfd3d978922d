import assert from "node:assert/strict";
import { join } from "node:path";
import { treeAt } from "../../src/consistency/block_topology.ts";
import { ConsistentDriver } from "../../src/consistency/consistent_driver.ts";
import type { ReadBlock } from "../../src/consistency/direct_read.ts";
import { probeNbdExports } from "../../src/consistency/nbd_read_probe.ts";
import { NbdClient } from "../../src/nbd/client.ts";
import { staticProvider } from "../../src/nbd/export.ts";
import { ReadProbeBoard, SLOTS } from "../../src/nbd/read_probes.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { parseMountinfo } from "../../src/consistency/mountinfo.ts";
import { MemoryExport } from "../_helpers/nbd_exports.ts";
import { nbdsh, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { nbdTestWorkers } from "../_helpers/nbd_workers_mode.ts";
import { withService, writeDisk } from "../_helpers/service_fixture.ts";
import { makeTree, SYSFS_FILES, SYSFS_LINKS } from "../_helpers/system_tree.ts";

const MIB = 1 << 20;

/** The host mounts nbd0's partition at /mnt/nbd; nbd0 has no backend and no pid. */
const MOUNTINFO = parseMountinfo([
  "22 1 254:1 / / rw - ext4 /dev/vda1 rw",
  "43 22 43:1 / /mnt/nbd rw - ext4 /dev/nbd0p1 rw",
].join("\n"));

/**
 * A real NBD server (on the main thread, or on Workers: tests/consistency/workers/)
 * with exports "a" and "b" showing its READs to a probe board, and a sysfs fixture whose nbd0 and nbd1 (1 MiB each) stand for the
 * kernel's devices; the test decides what "reading /dev/nbdX" goes through.
 */
async function withProbedServer(
  body: (setup: {
    board: ReadProbeBoard;
    sysRoot: string;
    uri: (name: string) => string;
    exports: MemoryExport[];
  }) => Promise<void>,
): Promise<void> {
  const board = new ReadProbeBoard();
  const exports = [
    new MemoryExport({ name: "a", sizeBytes: MIB }),
    new MemoryExport({ name: "b", sizeBytes: MIB }),
  ];
  const server = await startNbdServer(staticProvider(exports), {
    tcp: { port: 0 },
    readProbes: board,
    workers: nbdTestWorkers(),
  });
  const sysRoot = await makeTree({
    ...SYSFS_FILES,
    "devices/nbd1/dev": "43:32\n",
    "devices/nbd1/size": "2048\n",
  }, { ...SYSFS_LINKS, "block/nbd1": "devices/nbd1" });
  try {
    await body({
      board,
      sysRoot,
      uri: (name) => `nbd://127.0.0.1:${server.tcpPort}/${name}`,
      exports,
    });
  } finally {
    await server.close();
    await Deno.remove(sysRoot, { recursive: true });
  }
}

/** "/dev/nbdX" read through a real NBD client connected to the export `byDevice` names. */
async function clientsFor(
  byDevice: Record<string, string>,
): Promise<{ readBlock: ReadBlock; reads: string[]; close: () => Promise<void> }> {
  const clients = new Map<string, NbdClient>();
  for (const [device, uri] of Object.entries(byDevice)) {
    clients.set(`/dev/${device}`, await NbdClient.connect(uri));
  }
  const reads: string[] = [];
  return {
    reads,
    readBlock: async (path, offset, length) => {
      reads.push(`${path} ${offset}+${length}`);
      await clients.get(path)!.pread(offset, new Uint8Array(length));
    },
    close: async () => {
      for (const client of clients.values()) await client.close();
    },
  };
}

Deno.test("a read probe names the export that got the probe block's READ, per device", async () => {
  await withProbedServer(async ({ board, sysRoot, uri }) => {
    const clients = await clientsFor({ nbd0: uri("b"), nbd1: uri("a") });
    try {
      const outcomes = await probeNbdExports(["nbd0", "nbd1"], {
        board,
        readBlock: clients.readBlock,
        sys: treeAt(sysRoot),
        windowMs: 5000,
      });
      assert.deepEqual(Object.fromEntries(outcomes), {
        nbd0: { exportName: "b" },
        nbd1: { exportName: "a" },
      });
      for (const read of clients.reads) {
        const [, offset, length] = /^\/dev\/nbd\d (\d+)\+(\d+)$/.exec(read)!.map(Number);
        assert.equal(length, 4096);
        assert.equal(offset % 4096, 0);
        assert.ok(offset + length <= MIB, read);
      }
    } finally {
      await clients.close();
    }
  });
});

Deno.test("a read probe through nbdsh (libnbd) names its export", {
  ignore: toolsMissing("nbdsh"),
}, async () => {
  await withProbedServer(async ({ board, sysRoot, uri }) => {
    const outcomes = await probeNbdExports(["nbd0"], {
      board,
      readBlock: async (_path, offset, length) => {
        await nbdsh(uri("a"), `h.connect_uri(uri)\nh.pread(${length}, ${offset})`);
      },
      sys: treeAt(sysRoot),
      windowMs: 10_000,
    });
    assert.deepEqual(outcomes.get("nbd0"), { exportName: "a" });
  });
});

Deno.test("a device served elsewhere, a stuck read or one with no block is not identified, within the window", async () => {
  await withProbedServer(async ({ board, sysRoot }) => {
    const elsewhere = new MemoryExport({ name: "a", sizeBytes: MIB });
    const other = await startNbdServer(staticProvider([elsewhere]), { tcp: { port: 0 } });
    const clients = await clientsFor({ nbd0: `nbd://127.0.0.1:${other.tcpPort}/a` });
    let stuck: () => void = () => {};
    try {
      const outcomes = await probeNbdExports(["nbd0", "nbd1", "nbd2"], {
        board,
        readBlock: (path, offset, length) => {
          if (path === "/dev/nbd0") return clients.readBlock(path, offset, length);
          return new Promise((resolve) => stuck = resolve);
        },
        sys: treeAt(sysRoot),
        windowMs: 300,
      });
      assert.equal(clients.reads.length, 1, "the other server got the read");
      assert.match((outcomes.get("nbd0") as { unknown: string }).unknown, /no READ/);
      assert.match((outcomes.get("nbd1") as { unknown: string }).unknown, /no READ/);
      assert.match((outcomes.get("nbd2") as { unknown: string }).unknown, /no whole block/);
    } finally {
      stuck();
      await clients.close();
      await other.close();
    }
  });
});

Deno.test("a failing read is not identified and frees its slot; a probe with no free slot says unknown", async () => {
  await withProbedServer(async ({ board, sysRoot, uri }) => {
    const sys = treeAt(sysRoot);
    const failed = await probeNbdExports(["nbd0"], {
      board,
      readBlock: () => Promise.reject(new Error("EIO")),
      sys,
    });
    assert.match((failed.get("nbd0") as { unknown: string }).unknown, /reading nbd0 failed: EIO/);
    const stuck: (() => void)[] = [];
    const holding = Promise.all(
      Array.from({ length: SLOTS }, (_, i) =>
        board.watch(
          { offset: i * 4096, length: 7 },
          () => new Promise((resolve) => stuck.push(resolve)),
          { windowMs: 2000 },
        )),
    );
    const full = await probeNbdExports(["nbd0"], {
      board,
      readBlock: () => Promise.resolve(),
      sys,
    });
    assert.match((full.get("nbd0") as { unknown: string }).unknown, /no READ/);
    assert.deepEqual(await holding, Array(SLOTS).fill(undefined));
    stuck.forEach((resolve) => resolve());
    const clients = await clientsFor({ nbd0: uri("b") });
    try {
      const again = await probeNbdExports(["nbd0"], {
        board,
        readBlock: clients.readBlock,
        sys,
        windowMs: 5000,
      });
      assert.deepEqual(again.get("nbd0"), { exportName: "b" }, "every slot was freed");
    } finally {
      await clients.close();
    }
  });
});

Deno.test("READs that are not the probe's (another offset or length) do not count", async () => {
  await withProbedServer(async ({ board, uri, exports }) => {
    const client = await NbdClient.connect(uri("a"));
    try {
      const name = await board.watch({ offset: 8192, length: 4096 }, async () => {
        await client.pread(8192, new Uint8Array(512));
        await client.pread(4096, new Uint8Array(4096));
      }, { windowMs: 300 });
      assert.equal(name, undefined);
      const hit = await board.watch({ offset: 8192, length: 4096 }, async () => {
        await client.pread(8192, new Uint8Array(4096));
      }, { windowMs: 5000 });
      assert.equal(hit, "a");
      assert.equal(exports[0].writes.length, 0, "a probe never writes");
    } finally {
      await client.close();
    }
  });
});

Deno.test("take freezes what is mounted from a /dev/nbd0 that names nothing, found by read probe", async () => {
  const sysRoot = await makeTree(SYSFS_FILES, SYSFS_LINKS);
  const calls: string[] = [];
  const log: string[] = [];
  const freezer = {
    freeze: (mountPoint: string) => Promise.resolve(void calls.push(`freeze ${mountPoint}`)),
    thaw: (mountPoint: string) => Promise.resolve(void calls.push(`thaw ${mountPoint}`)),
    close: () => {},
  };
  let exportOfNbd0 = "vda";
  let mounts = MOUNTINFO;
  let probes = 0;
  let client: NbdClient | undefined;
  try {
    await withService({
      wrapDriver: (driver) =>
        new ConsistentDriver(driver, {
          freezer,
          log: (line) => log.push(line),
          sys: treeAt(sysRoot),
          proc: treeAt(join(sysRoot, "proc")),
          mounts: () => Promise.resolve(mounts),
          readProbe: {
            board: driver.readProbes,
            windowMs: 5000,
            readBlock: async (path, offset, length) => {
              assert.equal(path, "/dev/nbd0");
              probes++;
              client = await NbdClient.connect(
                `nbd://127.0.0.1:${driver.nbdServer.tcpPort}/${exportOfNbd0}`,
              );
              try {
                await client.pread(offset, new Uint8Array(length));
              } finally {
                await client.close();
              }
            },
          },
        }),
    }, async (fixture) => {
      for (const name of ["vda", "vdb"]) {
        const path = join(fixture.allowed, `${name}.img`);
        await writeDisk(path, MIB);
        await fixture.client.devices.attach({ path, name });
      }
      const take = async (device: string) => {
        const snapshot = await fixture.client.snapshots.create({
          devices: [device],
          diffStorage: {
            path: join(fixture.allowed, `${crypto.randomUUID()}.diff`),
            limitBytes: 4 * MIB,
          },
        });
        const taken = (await fixture.client.snapshots.take(snapshot.id)).consistency!;
        await fixture.client.snapshots.destroy(snapshot.id);
        return taken;
      };
      const vda = await take("vda");
      assert.deepEqual(calls, ["freeze /mnt/nbd", "thaw /mnt/nbd"]);
      assert.equal(vda.devices[0].filesystems[0].blockDevice, "nbd0p1");
      assert.equal(vda.devices[0].filesystems[0].frozen, true);
      assert.ok(log.includes(`take: the read probe of nbd0 reached export "vda"`), log.join("\n"));
      calls.length = 0;
      const vdb = await take("vdb");
      assert.deepEqual(calls, [], "nbd0 is vda's, not vdb's");
      assert.deepEqual(vdb.devices[0].filesystems, []);
      exportOfNbd0 = "vdb";
      const again = await take("vdb");
      assert.deepEqual(calls, ["freeze /mnt/nbd", "thaw /mnt/nbd"]);
      assert.equal(again.devices[0].filesystems[0].frozen, true);
      assert.equal(probes, 3);
      mounts = MOUNTINFO.filter((m) => !m.source.startsWith("/dev/nbd"));
      calls.length = 0;
      await take("vdb");
      assert.equal(probes, 3, "an nbdX with nothing mounted is not probed");
      assert.deepEqual(calls, []);
    });
  } finally {
    await Deno.remove(sysRoot, { recursive: true });
  }
});

Deno.test("one READ answers one probe: the same probe cannot be armed twice at once", async () => {
  await withProbedServer(async ({ board, uri }) => {
    const client = await NbdClient.connect(uri("b"));
    try {
      let second: Promise<string | undefined> | undefined;
      const first = await board.watch({ offset: 4096, length: 4096 }, async () => {
        second = board.watch({ offset: 4096, length: 4096 }, () => Promise.resolve(), {
          windowMs: 5000,
        });
        await client.pread(4096, new Uint8Array(4096));
      }, { windowMs: 5000 });
      assert.equal(first, "b");
      assert.equal(await second, undefined, "refused while the first was armed");
    } finally {
      await client.close();
    }
  });
});
