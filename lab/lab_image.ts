/**
 * The lab image: Packer (packer/blksnap-lab.pkr.hcl) boots the base disk, installs the guest
 * agent and the service bundle, and shuts down. Cached under .lab-cache/image/ by a key over the
 * base disk's key, the template, the provisioning script, the guest files and the bundle.
 *
 * The build logs in over SSH with a key generated for this build alone: its public half goes to
 * the guest on the kernel command line and lives in the guest's /run only, its private half is
 * deleted when the build ends. The image holds no key and no password.
 *
 * @module
 */

import type { BaseImage } from "./base_image.ts";
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
import { makeSshKey } from "./ssh_key.ts";
import type { Accelerator } from "./qemu_args.ts";
import type { Reporter } from "./reporter.ts";

/** A built lab image: the same kind of record as its base disk, plus what Packer installed. */
export interface LabImage extends BaseImage {
  /** True when /opt/blksnap/blksnap.js is in the image. */
  readonly hasService: boolean;
}

/** Options of {@link ensureLabImage}. */
export interface EnsureLabImageOptions {
  readonly base: BaseImage;
  readonly kernelPackage: string;
  /** The service bundle to install, if any. */
  readonly serviceBundle?: string;
  readonly accel: Accelerator;
  readonly packerDir: string;
  readonly cacheRoot: string;
  readonly reporter: Reporter;
  readonly rebuild: boolean;
}

/** The cache inputs of the Packer stage. */
export async function labImageInputs(
  options: Pick<EnsureLabImageOptions, "base" | "serviceBundle" | "packerDir">,
): Promise<CacheInputs> {
  const { packerDir } = options;
  const file = async (path: string) => await sha256Hex(await Deno.readFile(`${packerDir}/${path}`));
  return {
    "base.key": options.base.key,
    "packer/blksnap-lab.pkr.hcl": await file("blksnap-lab.pkr.hcl"),
    "packer/provision.sh": await file("provision.sh"),
    ...(await digestTree(`${packerDir}/guest`, "packer/guest/")),
    "service.bundle": options.serviceBundle === undefined
      ? "absent"
      : await sha256Hex(await Deno.readFile(options.serviceBundle)),
    "packer.version": (await capture("packer", ["version"])).trim(),
  };
}

async function readImage(dir: string, key: string): Promise<LabImage | undefined> {
  try {
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/manifest.json`));
    if (manifest.key !== key) return undefined;
    return {
      dir,
      key,
      qcow2: `${dir}/blksnap-lab.qcow2`,
      kernel: `${dir}/vmlinuz`,
      initrd: `${dir}/initrd.img`,
      kernelRelease: manifest.kernelRelease,
      hasService: manifest.hasService === true,
    };
  } catch {
    return undefined;
  }
}

/**
 * Returns the cached lab image for these inputs, building it with Packer when missing.
 *
 * @throws {ServiceError} UNAVAILABLE when Packer is missing, IO when the build fails (the detail
 * names the log).
 */
export async function ensureLabImage(options: EnsureLabImageOptions): Promise<LabImage> {
  const { base, reporter } = options;
  const inputs = await labImageInputs(options);
  const key = await cacheKey(inputs);
  const dir = `${options.cacheRoot}/image/${options.kernelPackage}-${key.slice(0, 16)}`;
  const cached = options.rebuild ? undefined : await readImage(dir, key);
  if (cached !== undefined) {
    reporter.line(`lab image: cached (${cached.qcow2})`);
    return cached;
  }
  const previous = await previousInputs(`${options.cacheRoot}/image`, options.kernelPackage);
  if (previous !== undefined) {
    const changed = changedInputs(previous, inputs);
    reporter.line(
      `lab image: ${changed.length ? `inputs changed: ${changed.join(", ")}` : "rebuild"}`,
    );
  }
  return await reporter.step(`build the lab image with Packer (${options.accel})`, async () => {
    const work = `${dir}.partial-${Deno.pid}`;
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await Deno.mkdir(`${work}/payload/guest`, { recursive: true });
    const started = Date.now();
    for await (const entry of Deno.readDir(`${options.packerDir}/guest`)) {
      await Deno.copyFile(
        `${options.packerDir}/guest/${entry.name}`,
        `${work}/payload/guest/${entry.name}`,
      );
    }
    if (options.serviceBundle !== undefined) {
      await Deno.copyFile(options.serviceBundle, `${work}/payload/blksnap.js`);
    }
    const manifest = {
      key,
      inputs,
      kernelPackage: options.kernelPackage,
      kernelRelease: base.kernelRelease,
      hasService: options.serviceBundle !== undefined,
    };
    await Deno.writeTextFile(`${work}/payload/manifest.json`, JSON.stringify(manifest, null, 2));
    const sshKey = `${work}/build_key`;
    try {
      const publicKey = await makeSshKey(sshKey, "blksnap-lab-build");
      const log = `${work}/packer.log`;
      await runLogged("packer", [
        "build",
        "-color=false",
        `-var=base_image=${base.qcow2}`,
        `-var=base_checksum=sha256:${await fileSha256(base.qcow2)}`,
        `-var=kernel=${base.kernel}`,
        `-var=initrd=${base.initrd}`,
        `-var=payload_dir=${work}/payload`,
        `-var=ssh_private_key_file=${sshKey}`,
        `-var=ssh_public_key_b64=${btoa(publicKey)}`,
        `-var=output_dir=${work}/image`,
        `-var=serial_log=${work}/serial.log`,
        `-var=accelerator=${options.accel}`,
        `-var=kernel_package=${options.kernelPackage}`,
        `${options.packerDir}/blksnap-lab.pkr.hcl`,
      ], {
        cwd: work,
        env: { CHECKPOINT_DISABLE: "1", PACKER_CACHE_DIR: `${options.cacheRoot}/packer_cache` },
        logFile: log,
        onLine: (line) => reporter.status(line.replace(/^==> qemu\.lab: /, "")),
      });
    } finally {
      // The build's login ends with the build.
      await Deno.remove(sshKey).catch(() => {});
      await Deno.remove(`${sshKey}.pub`).catch(() => {});
    }
    await Deno.rename(`${work}/image/blksnap-lab.qcow2`, `${work}/blksnap-lab.qcow2`);
    await Deno.remove(`${work}/image`, { recursive: true });
    await Deno.remove(`${work}/payload`, { recursive: true });
    await Deno.copyFile(base.kernel, `${work}/vmlinuz`);
    await Deno.copyFile(base.initrd, `${work}/initrd.img`);
    await publishBuild(work, dir, {
      manifest,
      startedMs: started,
      cacheDir: `${options.cacheRoot}/image`,
      kernelPackage: options.kernelPackage,
    });
    return (await readImage(dir, key))!;
  });
}

async function fileSha256(path: string): Promise<string> {
  const output = await capture("sha256sum", [path]);
  return output.split(/\s/)[0];
}
