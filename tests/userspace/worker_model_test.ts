/**
 * The randomized model test at the NBD level, against the Worker plane:
 * two file-backed devices served by two blocking Workers (device exports on
 * the fast path: Worker-side CBT marks, copy-on-write asked of the owner),
 * image exports delegated to the owner, all through real NBD connections,
 * checked against the plain reference model (tests/_helpers/reference_model.ts)
 * with its three invariants: every image reads as its device at take (plus
 * image writes); the CBT never misses a changed block (read tables checked
 * at every take); devices never lose a write (reads, and a full comparison
 * at the end). Batches of concurrent requests keep out pairs whose outcome
 * depends on their order (BatchRanges); an image read racing a device write
 * over the same bytes is kept in, since the image must not depend on it. Small engine parameters (4 KiB
 * chunks and blocks) make most writes touch chunks in every state.
 *
 * Replay: BLKSNAP_MODEL_SEED=<seed> (printed on failure); BLKSNAP_MODEL_NBD_OPS
 * sets the number of requests (default 10,000).
 */

import assert from "node:assert/strict";
import { Engine } from "../../src/engine/engine.ts";
import type { Snapshot } from "../../src/engine/snapshot.ts";
import type { Tracker } from "../../src/engine/tracker.ts";
import { startNbdServer } from "../../src/nbd/server.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { openStore } from "../../src/store/open_store.ts";
import { engineExports } from "../../src/userspace/export_provider.ts";
import { NbdClient } from "../_helpers/nbd_client.ts";
import { Prng, randomSeed } from "../_helpers/prng.ts";
import { BatchRanges, firstDifference, ReferenceModel } from "../_helpers/reference_model.ts";

const SIZES = [37 * 4096 + 1536, 300 * 1024 + 512];
const CONNECTIONS_PER_DEVICE = 2;

function envNumber(name: string): number | undefined {
  const value = Deno.env.get(name);
  return value === undefined ? undefined : Number(value);
}

function expectBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const at = firstDifference(actual, expected);
  if (at >= 0) {
    throw new assert.AssertionError({
      message: `${what}: first difference at byte ${at} (${actual[at]} != ${expected[at]})`,
    });
  }
}

Deno.test("model (NBD, Workers): images, CBT and devices match the reference model", async () => {
  const seed = envNumber("BLKSNAP_MODEL_SEED") ?? randomSeed();
  const budget = envNumber("BLKSNAP_MODEL_NBD_OPS") ?? 10_000;
  const rng = new Prng(seed);
  const dir = await Deno.makeTempDir({ prefix: "worker-model-" });
  const engine = new Engine({
    params: {
      trackingBlockMinimumShift: 12,
      trackingBlockMaximumShift: 16,
      trackingBlockMaximumCount: 48,
      chunkMinimumShift: 12,
      chunkMaximumShift: 16,
      chunkMaximumCount: 64,
      chunkMaximumInQueue: 4,
      freeDiffBufferPoolSize: 2,
      diffStorageMinimumSectors: 64,
    },
  });
  const contents = SIZES.map((size) => rng.bytes(size));
  const stores = await Promise.all(SIZES.map(async (_, d) => {
    await Deno.writeFile(`${dir}/d${d}.img`, contents[d]);
    return await openStore(`${dir}/d${d}.img`);
  }));
  const trackers: Tracker[] = [];
  for (const [d, store] of stores.entries()) trackers.push(await engine.attach(`d${d}`, store));
  const model = new ReferenceModel(
    contents,
    trackers.map((t) => t.cbt.blockSizeBytes),
    trackers.map((t) => t.cbt.generationId),
  );
  const server = await startNbdServer(engineExports(engine), { tcp: { port: 0 }, workers: 2 });
  const uri = (name: string) => `nbd://127.0.0.1:${server.tcpPort}/${encodeURIComponent(name)}`;
  const devices: NbdClient[][] = [];
  let images: NbdClient[] = [];
  let snapshot: Snapshot | undefined;
  let writable = false;
  let ops = 0;
  let takes = 0;
  const randomRange = (size: number) => {
    const offset = rng.int(size);
    return { offset, length: 1 + rng.int(Math.min(size - offset, 3 * 4096)) };
  };
  const batch = async () => {
    const claims = new BatchRanges();
    const work: Promise<void>[] = [];
    for (let n = rng.range(1, 12); n > 0; n--) {
      const d = rng.int(SIZES.length);
      const image = snapshot !== undefined && rng.chance(0.35);
      const write = rng.chance(image ? (writable ? 0.3 : 0) : 0.55);
      const { offset, length } = randomRange(SIZES[d]);
      if (!claims.claim(`${image ? "i" : "d"}${d}`, offset, offset + length, write)) continue;
      ops++;
      const client = image ? images[d] : devices[d][rng.int(CONNECTIONS_PER_DEVICE)];
      if (write) {
        const data = rng.bytes(length);
        if (image) model.writeImage(d, offset, data);
        else model.write(d, offset, data);
        work.push(client.pwrite(offset, data));
      } else {
        const expected = image ? model.readImage(d, offset, length) : model.read(d, offset, length);
        const what = `seed ${seed}: ${image ? "image" : "device"} ${d} read ${offset}+${length}`;
        work.push(client.pread(offset, length).then((got) => expectBytes(got, expected, what)));
      }
    }
    await Promise.all(work);
  };
  const closeImages = async () => {
    await Promise.all(images.map((client) => client.close()));
    images = [];
  };
  try {
    for (let d = 0; d < SIZES.length; d++) {
      devices.push(
        await Promise.all(
          Array.from({ length: CONNECTIONS_PER_DEVICE }, () => NbdClient.connect(uri(`d${d}`))),
        ),
      );
    }
    while (ops < budget) {
      for (let n = rng.range(2, 10); n > 0; n--) await batch();
      if (snapshot !== undefined && rng.chance(0.6)) {
        await closeImages();
        await snapshot.destroy();
        model.destroy();
        snapshot = undefined;
        continue;
      }
      if (snapshot !== undefined) continue;
      writable = rng.chance(0.5);
      // A read-only image on a file storage is read by the Workers themselves (image fast path).
      snapshot = await engine.createSnapshot({
        storage: !writable && rng.chance(0.7)
          ? await openStore(`${dir}/diff-${takes}.img`, { create: true })
          : new MemoryStore({ capacityBytes: 0, maxBytes: 16 << 20 }),
        limitSectors: 16_384,
        writable,
        trackers: SIZES.map((_, d) => `d${d}`),
      });
      await snapshot.take();
      takes++;
      const dirty = model.take(SIZES.map((_, d) => d));
      for (const [d, blocks] of dirty) {
        const cbt = trackers[d].cbt;
        const table = cbt.read(0, cbt.blockCount);
        const missed = [...blocks.keys()].filter((b) => blocks[b] && table[b] < cbt.previousNumber);
        assert.deepEqual(missed, [], `seed ${seed}: device ${d}: changed blocks missing from CBT`);
      }
      images = await Promise.all(
        SIZES.map((_, d) => NbdClient.connect(uri(`d${d}@${snapshot!.id}`))),
      );
    }
    for (let d = 0; d < SIZES.length; d++) {
      expectBytes(await Deno.readFile(`${dir}/d${d}.img`), model.devices[d], `seed ${seed}: d${d}`);
    }
    assert.ok(takes >= 2, `seed ${seed}: only ${takes} takes`);
  } catch (error) {
    console.error(`replay with BLKSNAP_MODEL_SEED=${seed}`);
    throw error;
  } finally {
    await closeImages().catch(() => {});
    await Promise.all(devices.flat().map((client) => client.close().catch(() => {})));
    await server.close();
    await engine.close();
    for (const store of stores) await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
