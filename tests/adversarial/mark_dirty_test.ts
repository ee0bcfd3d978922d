/**
 * Issue 10, point 5: the largest mark-dirty request the schema allows
 * (65,536 ranges, each the whole of a 2,097,152-block device) is done in
 * O(ranges) and lets other I/O run meanwhile: NBD writes to another device
 * keep completing while it is served. Times are recorded, not asserted
 * (tests/bench/mark_dirty.ts measures against the targets).
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { NbdClient } from "../_helpers/nbd_client.ts";
import { withService } from "../_helpers/service_fixture.ts";
import { figures } from "./_serve.ts";

const BLOCKS = 2_097_152;
const BLOCK_BYTES = 65536;

Deno.test("65,536 whole-device dirty ranges on a 2,097,152-block device: all marked, NBD writes go on", async () => {
  await withService({}, async ({ allowed, client, makeDisk }) => {
    const big = join(allowed, "big.img");
    await Deno.writeFile(big, new Uint8Array(0));
    await Deno.truncate(big, BLOCKS * BLOCK_BYTES);
    await client.devices.attach({ path: big, name: "big" });
    const other = await client.devices.attach({
      path: await makeDisk("o.img", 1 << 20),
      name: "o",
    });
    const cbt = await client.cbt.info("big");
    assert.equal(cbt.blockCount, BLOCKS);
    const ranges = Array.from({ length: 65536 }, (_, i) => ({
      offset: 0,
      count: cbt.capacityBytes / 512 - (i % 7),
    }));
    const nbd = await NbdClient.connect(other.locator);
    let running = true;
    let writes = 0;
    let longestMs = 0;
    const writer = (async () => {
      while (running) {
        const started = performance.now();
        await nbd.pwrite((writes % 256) * 4096, new Uint8Array(4096).fill(writes & 255));
        longestMs = Math.max(longestMs, performance.now() - started);
        writes += 1;
      }
    })();
    const times: number[] = [];
    try {
      for (let round = 0; round < 3; round++) {
        const started = performance.now();
        await client.cbt.markDirty("big", ranges);
        times.push(performance.now() - started);
      }
    } finally {
      running = false;
      await writer;
      await nbd.close();
    }
    assert.ok(writes > 0, "NBD writes completed while the requests ran");
    const snapshot = await client.snapshots.create({
      devices: ["big"],
      diffStorage: { path: join(allowed, "big.diff"), limitBytes: 1 << 20 },
    });
    await client.snapshots.take(snapshot.id);
    const map = await client.cbt.map("big");
    assert.equal(map.length, BLOCKS);
    assert.ok(map.every((entry) => entry > 0), "every block is marked");
    await client.snapshots.destroy(snapshot.id);
    figures("mark-dirty", {
      ranges: ranges.length,
      blocks: BLOCKS,
      requestMs: times.map((t) => t.toFixed(0)).join("/"),
      nbdWrites: writes,
      longestNbdWriteMs: longestMs.toFixed(0),
    });
  });
});
