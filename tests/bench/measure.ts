/**
 * The two measuring tools of the benchmark: nbdcopy for sequential
 * throughput and fio's nbd engine for 4 KiB random IOPS.
 *
 * @module
 */

import { runToolOk } from "../_helpers/nbd_fixture.ts";

/** Copies `from` to `to` with nbdcopy (defaults); returns MiB/s for `sizeMiB`. */
export async function nbdcopy(from: string, to: string, sizeMiB: number): Promise<number> {
  const start = performance.now();
  await runToolOk("nbdcopy", [from, to]);
  const seconds = (performance.now() - start) / 1000;
  return round(sizeMiB / seconds);
}

/**
 * Copies the export at `uri` to a new file `target` with nbdcopy; returns
 * the seconds it took and the MiB allocated in the target (then removes it).
 */
export async function sparseCopy(uri: string, target: string): Promise<Record<string, number>> {
  await Deno.remove(target).catch(() => {});
  const start = performance.now();
  await runToolOk("nbdcopy", [uri, target]);
  const seconds = (performance.now() - start) / 1000;
  const allocated = ((await Deno.stat(target)).blocks ?? 0) * 512;
  await Deno.remove(target);
  return {
    sparseSeconds: Math.round(seconds * 100) / 100,
    sparseAllocatedMiB: round(allocated / 2 ** 20),
  };
}

/** 4 KiB random I/O at queue depth `depth` for `runtime` seconds; returns IOPS. */
export async function fio(
  uri: string,
  options: { rw: "randread" | "randwrite"; depth: number; runtime: number; sizeMiB: number },
): Promise<number> {
  const out = await runToolOk("fio", [
    "--name=bench",
    "--ioengine=nbd",
    `--uri=${uri}`,
    `--rw=${options.rw}`,
    "--bs=4k",
    `--iodepth=${options.depth}`,
    `--runtime=${options.runtime}`,
    "--time_based",
    `--size=${options.sizeMiB}m`,
    "--output-format=json",
  ]);
  const report = JSON.parse(out.slice(out.indexOf("{")));
  const job = report.jobs[0];
  return round(options.rw === "randread" ? job.read.iops : job.write.iops);
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}
