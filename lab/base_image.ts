/**
 * The lab's base disk (packer/base/make-base.sh: mmdebstrap of Debian with the chosen kernel, its
 * headers, the e2e tools and deno), cached under .lab-cache/base/ by a key over its inputs: the
 * script and its files, the kernel and headers packages and the versions apt would install now,
 * the package sources, the suite, the deno binary.
 *
 * @module
 */

import { ServiceError } from "../src/errors.ts";
import { headersPackage } from "./args.ts";
import { readHostSources, renderDeb822, selectSources } from "./apt_sources.ts";
import {
  type CacheInputs,
  cacheKey,
  changedInputs,
  digestTree,
  previousInputs,
  sha256Hex,
} from "./cache_key.ts";
import { capture, runLogged } from "./process.ts";
import { publishBuild } from "./publish_build.ts";
import type { Reporter } from "./reporter.ts";

/** A built base disk. */
export interface BaseImage {
  /** Cache folder of this build. */
  readonly dir: string;
  /** Cache key (hex SHA-256 of the inputs). */
  readonly key: string;
  /** The disk image (qcow2). */
  readonly qcow2: string;
  /** The guest kernel, for direct kernel boot. */
  readonly kernel: string;
  /** The guest initrd, for direct kernel boot. */
  readonly initrd: string;
  /** uname -r of the guest kernel. */
  readonly kernelRelease: string;
}

/** What the base disk is made of. */
export interface BaseRecipe {
  readonly kernelPackage: string;
  readonly suite: string;
  readonly diskSize: string;
  /** deb822 text of the package sources. */
  readonly sources: string;
  /** The deno binary installed in the image. */
  readonly denoPath: string;
}

/**
 * The version apt would install for `pkg` on this host, or "unknown" without apt-cache.
 *
 * @throws {ServiceError} NOT_FOUND when apt knows no such package.
 */
export async function candidateVersion(pkg: string): Promise<string> {
  let text: string;
  try {
    text = await capture("apt-cache", ["policy", pkg]);
  } catch (error) {
    if ((error as ServiceError).code === "UNAVAILABLE") return "unknown";
    throw error;
  }
  const candidate = /Candidate:\s*(\S+)/.exec(text)?.[1];
  if (candidate === undefined || candidate === "(none)") {
    throw new ServiceError(
      "NOT_FOUND",
      `Cannot build the lab image with ${pkg}: the host's apt lists have no such package ` +
        `(check the name, or run apt-get update)`,
    );
  }
  return candidate;
}

/** The recipe for `kernelPackage` from the host's apt configuration. */
export async function baseRecipe(kernelPackage: string, suite = "bookworm"): Promise<BaseRecipe> {
  const sources = renderDeb822(selectSources(await readHostSources(), suite));
  return { kernelPackage, suite, diskSize: "6G", sources, denoPath: Deno.execPath() };
}

/** The cache inputs of `recipe` (reads the script folder and asks apt for versions). */
export async function baseInputs(recipe: BaseRecipe, packerDir: string): Promise<CacheInputs> {
  const headers = headersPackage(recipe.kernelPackage);
  const deno = await Deno.stat(recipe.denoPath);
  return {
    ...(await digestTree(`${packerDir}/base`, "packer/base/")),
    "kernel.package": recipe.kernelPackage,
    "kernel.candidate": await candidateVersion(recipe.kernelPackage),
    "headers.package": headers,
    "headers.candidate": await candidateVersion(headers),
    "apt.sources": await sha256Hex(recipe.sources),
    "suite": recipe.suite,
    "disk.size": recipe.diskSize,
    "deno.version": Deno.version.deno,
    "deno.size": String(deno.size),
  };
}

/** Reads a finished cache entry, or undefined when `dir` holds none. */
async function readBase(dir: string, key: string): Promise<BaseImage | undefined> {
  try {
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
    if (manifest.key !== key) return undefined;
    return {
      dir,
      key,
      qcow2: `${dir}/base.qcow2`,
      kernel: `${dir}/vmlinuz`,
      initrd: `${dir}/initrd.img`,
      kernelRelease: manifest.kernelRelease,
    };
  } catch {
    return undefined;
  }
}

/** Options of {@link ensureBaseImage}. */
export interface EnsureBaseOptions {
  readonly recipe: BaseRecipe;
  readonly packerDir: string;
  readonly cacheRoot: string;
  readonly reporter: Reporter;
  /** Build even when the cache has it. */
  readonly rebuild: boolean;
}

/**
 * Returns the cached base disk for the recipe, building it first when missing.
 *
 * @throws {ServiceError} FORBIDDEN when a build is needed and the lab does not run as root;
 * IO when the build fails (the detail names the log).
 */
export async function ensureBaseImage(options: EnsureBaseOptions): Promise<BaseImage> {
  const { recipe, reporter } = options;
  const inputs = await baseInputs(recipe, options.packerDir);
  const key = await cacheKey(inputs);
  const dir = `${options.cacheRoot}/base/${recipe.kernelPackage}-${key.slice(0, 16)}`;
  const cached = options.rebuild ? undefined : await readBase(dir, key);
  if (cached !== undefined) {
    reporter.line(`base disk: cached (${recipe.kernelPackage}, kernel ${cached.kernelRelease})`);
    return cached;
  }
  const previous = await previousInputs(`${options.cacheRoot}/base`, recipe.kernelPackage);
  if (previous !== undefined) {
    const changed = changedInputs(previous, inputs);
    reporter.line(
      `base disk: ${changed.length ? `inputs changed: ${changed.join(", ")}` : "rebuild"}`,
    );
  }
  if (Deno.uid() !== 0) {
    throw new ServiceError(
      "FORBIDDEN",
      "Cannot build the lab's base disk: mmdebstrap --mode=root and mkfs.ext4 -d need root. " +
        "Run deno task lab as root once; later runs reuse the cache.",
    );
  }
  return await reporter.step(`build the base disk (${recipe.kernelPackage})`, async () => {
    const work = `${dir}.partial-${Deno.pid}`;
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await Deno.mkdir(work, { recursive: true });
    const started = Date.now();
    await Deno.writeTextFile(`${work}/sources`, recipe.sources);
    await runLogged(`${options.packerDir}/base/make-base.sh`, [
      "--out",
      work,
      "--kernel",
      recipe.kernelPackage,
      "--headers",
      headersPackage(recipe.kernelPackage),
      "--sources",
      `${work}/sources`,
      "--deno",
      recipe.denoPath,
      "--suite",
      recipe.suite,
      "--size",
      recipe.diskSize,
    ], { logFile: `${work}/build.log`, onLine: (line) => reporter.status(line) });
    const kernelRelease = (await Deno.readTextFile(`${work}/kernel-release`)).trim();
    await publishBuild(work, dir, {
      manifest: { key, inputs, kernelRelease },
      startedMs: started,
      cacheDir: `${options.cacheRoot}/base`,
      kernelPackage: recipe.kernelPackage,
    });
    return (await readBase(dir, key))!;
  });
}
