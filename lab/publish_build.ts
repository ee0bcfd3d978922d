/**
 * The last step of every cached build (base disk, lab image): write the
 * build's manifest, move the finished work folder into its cache place
 * (replacing a stale one), and prune older builds of the same kernel.
 *
 * @module
 */

import { pruneBuilds } from "./prune.ts";

/** Options of {@link publishBuild}. */
export interface PublishOptions {
  /** The manifest to write as manifest.json (its build time is added). */
  manifest: Record<string, unknown>;
  /** When the build started (ms since the epoch). */
  startedMs: number;
  /** The cache folder holding this kind of build (e.g. .lab-cache/base). */
  cacheDir: string;
  /** The kernel package the build is for (pruning keeps one per package). */
  kernelPackage: string;
}

/** Publishes the build in `work` as `dir`. */
export async function publishBuild(
  work: string,
  dir: string,
  options: PublishOptions,
): Promise<void> {
  const builtSeconds = (Date.now() - options.startedMs) / 1000;
  await Deno.writeTextFile(
    `${work}/manifest.json`,
    JSON.stringify({ ...options.manifest, builtSeconds }, null, 2),
  );
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.rename(work, dir);
  await pruneBuilds(options.cacheDir, {
    kernelPackage: options.kernelPackage,
    keep: dir.slice(dir.lastIndexOf("/") + 1),
  });
}
