/**
 * Bench row: `POST /v1/devices/{id}/cbt/dirty` with 65,536 ranges each
 * spanning the whole of a 2,097,152-block device (a 128 GiB sparse file at
 * the kernel's default 64 KiB tracking blocks), against the real service
 * (UserspaceDriver, the Hono app, the HTTP listener) on 127.0.0.1, while an
 * NBD client writes 4 KiB blocks back to back to another device of the same
 * service. Reports the request times and the longest NBD write that
 * overlapped a request (targets: < 100 ms and < 50 ms). One warm-up request
 * (the first call compiles the parsing and marking code) is not counted.
 * Figures are printed, never asserted.
 *
 * @module
 */

import { join } from "node:path";
import { createApp } from "../../src/api/app.ts";
import { serveHttp } from "../../src/api/http_listener.ts";
import { PathPolicy } from "../../src/api/path_policy.ts";
import { UserspaceDriver } from "../../src/userspace/userspace_driver.ts";
import { NbdClient } from "../_helpers/nbd_client.ts";

/** What {@link benchMarkDirty} measured. */
export interface MarkDirtyResult {
  /** Tracking blocks of the device. */
  blockCount: number;
  /** Ranges per request. */
  ranges: number;
  /** Body size of one request, bytes. */
  bodyBytes: number;
  /** Median whole-request time (send to response), ms. */
  requestMedianMs: number;
  /** Slowest request, ms. */
  requestMaxMs: number;
  /** Longest NBD write overlapping a request, ms. */
  nbdMaxDelayMs: number;
  /** NBD writes completed while requests ran. */
  nbdWrites: number;
}

const BLOCK_COUNT = 2_097_152;
const BLOCK_BYTES = 65536;
const RANGES = 65536;

/** Runs `rounds` mark-dirty requests under NBD load in a temp folder under `dir`. */
export async function benchMarkDirty(dir: string, rounds = 10): Promise<MarkDirtyResult> {
  const root = await Deno.makeTempDir({ dir, prefix: "mark-dirty-" });
  const driver = await UserspaceDriver.start({
    nbd: { tcp: { hostname: "127.0.0.1", port: 0 } },
    logger: () => {},
  });
  const server = serveHttp(
    Deno.listen({ hostname: "127.0.0.1", port: 0 }),
    createApp(driver, { paths: await PathPolicy.create([root]) }).fetch,
  );
  const baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
  try {
    const big = join(root, "big.img");
    const small = join(root, "small.img");
    await Deno.truncate(big, BLOCK_COUNT * BLOCK_BYTES).catch(async () => {
      await Deno.writeFile(big, new Uint8Array(0));
      await Deno.truncate(big, BLOCK_COUNT * BLOCK_BYTES);
    });
    await Deno.writeFile(small, new Uint8Array(16 << 20));
    await driver.attach(big, { name: "big" });
    const other = await driver.attach(small, { name: "small" });
    const cbt = await driver.cbtInfo("big");
    if (cbt.blockCount !== BLOCK_COUNT) throw new Error(`big has ${cbt.blockCount} blocks`);
    const countSectors = cbt.capacityBytes / 512;
    const body = JSON.stringify({
      ranges: Array.from({ length: RANGES }, () => ({ offset: 0, count: countSectors })),
    });
    const nbd = await NbdClient.connect(other.locator);
    const times: number[] = [];
    let running = false;
    let stop = false;
    let nbdMax = 0;
    let nbdWrites = 0;
    const block = new Uint8Array(4096).fill(9);
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const overlapped = running;
        const started = performance.now();
        await nbd.pwrite((i % 4096) * 4096, block);
        const took = performance.now() - started;
        if (overlapped || running) {
          nbdMax = Math.max(nbdMax, took);
          nbdWrites += 1;
        }
      }
    })();
    try {
      for (let round = -1; round < rounds; round++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        running = round >= 0;
        const started = performance.now();
        const response = await fetch(`${baseUrl}/v1/devices/big/cbt/dirty`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        });
        await response.body?.cancel();
        if (running) times.push(performance.now() - started);
        running = false;
        if (response.status !== 204) throw new Error(`mark-dirty answered ${response.status}`);
      }
    } finally {
      stop = true;
      await writer;
      await nbd.close();
    }
    times.sort((a, b) => a - b);
    return {
      blockCount: BLOCK_COUNT,
      ranges: RANGES,
      bodyBytes: body.length,
      requestMedianMs: times[Math.floor(times.length / 2)],
      requestMaxMs: times[times.length - 1],
      nbdMaxDelayMs: nbdMax,
      nbdWrites,
    };
  } finally {
    await driver.close();
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
}

/** The row as a Markdown table. */
export function formatMarkDirty(result: MarkDirtyResult): string {
  const f = (ms: number) => ms.toFixed(1);
  return [
    `Mark-dirty: ${result.ranges} whole-device ranges on a ${result.blockCount}-block device ` +
    `(${(result.bodyBytes / 2 ** 20).toFixed(1)} MiB body), with 4 KiB NBD writes running`,
    "",
    "| request median ms | request max ms | longest overlapping NBD write ms | NBD writes |",
    "|---|---|---|---|",
    `| ${f(result.requestMedianMs)} | ${f(result.requestMaxMs)} | ${
      f(result.nbdMaxDelayMs)
    } | ${result.nbdWrites} |`,
  ].join("\n");
}

if (import.meta.main) {
  const dir = Deno.args[0] ?? Deno.env.get("TMPDIR") ?? "/tmp";
  console.log(formatMarkDirty(await benchMarkDirty(dir)));
}
