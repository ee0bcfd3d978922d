/**
 * Where the lab finds its inputs and keeps its cache, relative to the repository.
 *
 * @module
 */

/** The repository root (the folder of deno.json). */
export const repoRoot: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Packer template, base-disk script and guest files. */
export const packerDir = `${repoRoot}/packer`;

/** The e2e cases that run in the guest. */
export const e2eDir = `${repoRoot}/tests/e2e`;

/** The runner script shipped with each run. */
export const runnerScript = `${repoRoot}/lab/guest/run.sh`;

/** The service's CLI entry, bundled into the image. */
export const serviceEntry = `${repoRoot}/src/cli/main.ts`;

/** Cache of built images and run folders (git-ignored); BLKSNAP_LAB_CACHE overrides it. */
export function cacheRoot(): string {
  return Deno.env.get("BLKSNAP_LAB_CACHE") ?? `${repoRoot}/.lab-cache`;
}
