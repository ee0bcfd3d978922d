/**
 * The blksnap module in the lab guest: built from the source folder the lab was given (the
 * standard kbuild call against the running kernel's headers) or taken prebuilt, then loaded and
 * unloaded. The out-of-tree build (veeam/blksnap, folder module/) gives bdevfilter.ko and
 * veeamblksnap.ko; bdevfilter must be loaded first. Cases share one build per guest run.
 *
 * @module
 */

import { labEnv } from "./guest.ts";
import { exists, run, waitFor } from "./sh.ts";

/** The module files, in load order. */
export const moduleFiles = ["bdevfilter.ko", "veeamblksnap.ko"] as const;

/** Module names, in unload order. */
export const moduleNames = ["veeamblksnap", "bdevfilter"] as const;

/** Control devices that appear once the modules are loaded. */
export const controlDevices = ["/dev/bdevfilter", "/dev/veeamblksnap"] as const;

const buildDir = "/var/lib/blksnap-lab/module-build";

/** The running kernel's release (uname -r). */
export async function kernelRelease(): Promise<string> {
  return (await run("uname", ["-r"])).stdout.trim();
}

/** The kbuild folder of the running kernel's headers. */
export async function headersDir(): Promise<string> {
  return `/lib/modules/${await kernelRelease()}/build`;
}

/**
 * Copies `source` to `target` and builds it with `make -C <headers> M=<target> modules`.
 * Returns the make output.
 *
 * @throws {Error} when make fails (its output is in the message).
 */
export async function buildModule(source: string, target: string): Promise<string> {
  await run("rm", ["-rf", target]);
  await run("mkdir", ["-p", target]);
  await run("cp", ["-a", `${source}/.`, target]);
  const nproc = (await run("nproc", [])).stdout.trim();
  const result = await run("make", [
    "-C",
    await headersDir(),
    `M=${target}`,
    `-j${nproc}`,
    "modules",
  ]);
  return result.stdout + result.stderr;
}

let built: Promise<string> | undefined;

/**
 * The folder holding the module files: the prebuilt folder (--module-ko), or the build of the
 * source folder (--module-src), made once per guest run (its output goes to
 * $LAB_OUT/module-build.log).
 *
 * @throws {Error} when no module was given or the build fails.
 */
export async function moduleDir(): Promise<string> {
  const lab = labEnv();
  if (lab.moduleKo !== undefined) return lab.moduleKo;
  if (lab.moduleSrc === undefined) throw new Error("No blksnap module was given to the lab");
  if (moduleFiles.every((file) => exists(`${buildDir}/${file}`))) return buildDir;
  built ??= (async () => {
    const output = await buildModule(lab.moduleSrc!, buildDir).catch(async (error) => {
      if (lab.outDir) await Deno.writeTextFile(`${lab.outDir}/module-build.log`, String(error));
      throw error;
    });
    if (lab.outDir) await Deno.writeTextFile(`${lab.outDir}/module-build.log`, output);
    return buildDir;
  })();
  return await built;
}

/** True when the kernel has module `name` loaded. */
export function isLoaded(name: string): boolean {
  return exists(`/sys/module/${name}`);
}

/**
 * Loads bdevfilter then veeamblksnap from `dir` and waits for their control devices.
 *
 * @throws {Error} when insmod fails or a device does not appear within 10 s.
 */
export async function loadModules(dir: string): Promise<void> {
  for (const file of moduleFiles) {
    const name = file.replace(/\.ko$/, "");
    if (!isLoaded(name)) await run("insmod", [`${dir}/${file}`]);
  }
  for (const device of controlDevices) {
    await waitFor(`${device} to appear`, () => exists(device));
  }
}

/**
 * Unloads veeamblksnap then bdevfilter (those that are loaded), retrying for up to 5 s while one
 * is in use: a snapshot's event reader may still sleep in SNAPSHOT_WAIT_EVENT for one slice (at
 * most 1 s) after its driver closed, holding the control device until the call returns.
 */
export async function unloadModules(): Promise<void> {
  for (const name of moduleNames) {
    if (!isLoaded(name)) continue;
    await waitFor(
      `${name} to unload`,
      async () => (await run("rmmod", [name], { allowFailure: true })).code === 0,
      { timeoutMs: 5000 },
    );
  }
}
