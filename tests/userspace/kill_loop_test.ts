/**
 * kill -9 at random moments during QD16 writes with flushes, on the real
 * service (`blksnap serve`, userspace backend) and a real NBD connection:
 * after each restart the CBT generation is the same, the change numbers of
 * the last take survived, and the changes since the last snapshot (the CBT
 * map, and `.../changes?since=<the last snapshot's change token>`) cover
 * every write the service acknowledged before it died. Snapshots are lost
 * by a crash, and the storage files the service created are removed.
 * Runs on a regular file (with NBD served on the main thread, and a shorter
 * loop with `--nbd-workers 2`) and, when a loop device can be set up (root
 * and losetup), on a block device.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createClient } from "../../src/client/client.ts";
import { RunningCli } from "../_helpers/api_cli.ts";
import { NbdClient } from "../_helpers/nbd_client.ts";
import { Prng } from "../_helpers/prng.ts";

const MiB = 1 << 20;
const BLOCK_BYTES = 64 * 1024;
const WRITE_BYTES = 4096;
const QUEUE_DEPTH = 16;

interface Started {
  serve: RunningCli;
  client: ReturnType<typeof createClient>;
  nbdPort: number;
}

async function start(env: Record<string, string>): Promise<Started> {
  const serve = new RunningCli(["serve"], env);
  const [, port] = await serve.waitForStderr(/HTTP API on http:\/\/[^ ]+:(\d+)\/v1 /, 30_000);
  const [, nbdPort] = await serve.waitForStderr(/NBD exports on nbd:\/\/[^ ]+:(\d+)\/<device>$/);
  return {
    serve,
    client: createClient({ baseUrl: `http://127.0.0.1:${port}`, retries: 0 }),
    nbdPort: Number(nbdPort),
  };
}

/** QD16 random 4 KiB writes with a flush every 8 writes per worker, until the service dies. */
async function writeUntilKilled(
  started: Started,
  prng: Prng,
  blocks: number,
): Promise<Set<number>> {
  const acked = new Set<number>();
  const nbd = await NbdClient.connect(`nbd://127.0.0.1:${started.nbdPort}/d`);
  const data = new Uint8Array(WRITE_BYTES).fill(prng.int(256));
  const worker = async () => {
    for (let n = 1;; n++) {
      const offset = prng.int((blocks * BLOCK_BYTES) / WRITE_BYTES) * WRITE_BYTES;
      await nbd.pwrite(offset, data);
      acked.add(Math.floor(offset / BLOCK_BYTES));
      if (n % 8 === 0) await nbd.flush();
    }
  };
  const workers = Array.from({ length: QUEUE_DEPTH }, () => worker().catch(() => {}));
  await new Promise((resolve) => setTimeout(resolve, 20 + prng.int(250)));
  started.serve.kill("SIGKILL");
  await Promise.all(workers);
  await started.serve.finished();
  await nbd.close().catch(() => {});
  return acked;
}

async function killLoop(
  options: { devicePath: string; allow: string[]; kills: number; nbdWorkers?: string },
) {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-kill-" }));
  try {
    const disks = join(root, "disks");
    await Deno.mkdir(disks);
    const env = {
      BLKSNAP_LISTEN: "127.0.0.1:0",
      BLKSNAP_BACKEND: "userspace",
      BLKSNAP_STATE_DIR: join(root, "state"),
      BLKSNAP_ALLOW_PATH: [disks, ...options.allow].join(":"),
      BLKSNAP_NBD_LISTEN: "127.0.0.1:0",
      BLKSNAP_NBD_WORKERS: options.nbdWorkers ?? "0",
    };
    const prng = new Prng(20261201);
    let generationId = "";
    let lastNumber = 0;
    let acked = new Set<number>();
    let checkedBlocks = 0;
    let lastToken: string | undefined;
    for (let round = 0; round <= options.kills; round++) {
      const started = await start(env);
      try {
        const { client } = started;
        if (round === 0) {
          await client.devices.attach({ path: options.devicePath, name: "d" });
          generationId = (await client.cbt.info("d")).generationId;
        } else {
          assert.deepEqual(await client.snapshots.list(), [], "a crash loses the snapshots");
          const left = [...Deno.readDirSync(disks)].map((e) => e.name);
          assert.deepEqual(left, [], "their storage files are removed");
        }
        const snapshot = await client.snapshots.create({
          devices: ["d"],
          diffStorage: { path: join(disks, `diff-${round}`), limitBytes: 1 << 30 },
        });
        const taken = await client.snapshots.take(snapshot.id);
        const info = await client.cbt.info("d");
        assert.equal(info.generationId, generationId, `round ${round}: same generation`);
        assert.equal(info.changesNumber, lastNumber + 1, `round ${round}: the take's numbers`);
        const map = await client.cbt.map("d", { blockOffset: 0, blockCount: info.blockCount });
        const missed = [...acked].filter((block) => map[block] < info.changesNumber);
        assert.deepEqual(missed, [], `round ${round}: acknowledged writes missing from the CBT`);
        checkedBlocks += acked.size;
        if (lastToken !== undefined) {
          const changes = await client.images.changes(snapshot.id, "d", { since: lastToken });
          const covered = new Set<number>();
          for (const { offset, length } of changes.extents) {
            for (let b = offset / BLOCK_BYTES; b < (offset + length) / BLOCK_BYTES; b++) {
              covered.add(b);
            }
          }
          const uncovered = [...acked].filter((block) => !covered.has(block));
          assert.deepEqual(uncovered, [], `round ${round}: changes since the last token`);
        }
        lastToken = taken.devices[0].changeToken;
        lastNumber = info.changesNumber;
        if (round === options.kills) {
          started.serve.kill("SIGTERM");
          assert.equal((await started.serve.finishedWithin(15_000)).code, 0);
          break;
        }
        acked = await writeUntilKilled(started, prng, info.blockCount);
      } finally {
        await started.serve[Symbol.asyncDispose]();
      }
    }
    assert.ok(checkedBlocks >= options.kills * 4, `only ${checkedBlocks} acknowledged blocks`);
    console.log(`${options.kills} kills, ${checkedBlocks} acknowledged blocks checked`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("kill -9 during QD16 writes never loses an acknowledged write from the CBT (file)", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-kill-disk-" }));
  try {
    const path = join(dir, "disk.img");
    await Deno.writeFile(path, new Uint8Array(16 * MiB));
    await killLoop({ devicePath: path, allow: [dir], kills: 20 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kill -9 during QD16 writes through NBD Workers never loses an acknowledged write from the CBT", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-kill-disk-" }));
  try {
    const path = join(dir, "disk.img");
    await Deno.writeFile(path, new Uint8Array(16 * MiB));
    await killLoop({ devicePath: path, allow: [dir], kills: 6, nbdWorkers: "2" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function losetup(args: string[]): { ok: boolean; out: string } {
  try {
    const output = new Deno.Command("losetup", { args, stdout: "piped", stderr: "piped" })
      .outputSync();
    return { ok: output.success, out: new TextDecoder().decode(output.stdout).trim() };
  } catch {
    return { ok: false, out: "" };
  }
}

const loopProbe = Deno.uid() === 0 && losetup(["-f"]).ok;
if (!loopProbe) console.log("skipping the block-device kill loop: needs root and losetup");

Deno.test({
  name: "kill -9 during QD16 writes never loses an acknowledged write from the CBT (loop device)",
  ignore: !loopProbe,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-kill-loop-" }));
    const backing = join(dir, "backing.img");
    await Deno.writeFile(backing, new Uint8Array(16 * MiB));
    const attached = losetup(["--find", "--show", backing]);
    try {
      assert.ok(attached.ok, "losetup --find --show");
      await killLoop({ devicePath: attached.out, allow: [attached.out], kills: 20 });
    } finally {
      if (attached.ok) losetup(["-d", attached.out]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
