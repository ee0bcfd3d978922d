/**
 * The blksnap module in the lab guest, in whichever form the run has it:
 *
 * - out-of-tree (profile `outoftree`): built from the source folder the lab was given (the
 *   standard kbuild call against the running kernel's headers: the image's Debian headers, or a
 *   --kernel-headers tree for a --kernel-image) or taken prebuilt; bdevfilter.ko then
 *   veeamblksnap.ko are loaded with insmod and unloaded after the case. Cases share one build
 *   per guest run.
 * - the kernel's own (profile `upstream`): built in, so there is nothing to load or unload, or a
 *   module of a --kernel-image, loaded with `modprobe blksnap`.
 *
 * The profile a case asserts is the one the kernel shows: which control device exists once
 * blksnap is loaded (/dev/blksnap-control: upstream, /dev/veeamblksnap: outoftree).
 *
 * @module
 */

import assert from "node:assert/strict";
import { type DeviceNumber, splitDeviceNumber } from "../../../src/kernel/libc.ts";
import { labEnv } from "./guest.ts";
import { exists, run, waitFor } from "./sh.ts";

/** The module files of the out-of-tree module, in load order. */
export const moduleFiles = ["bdevfilter.ko", "veeamblksnap.ko"] as const;

/** Module names of the out-of-tree module, in unload order. */
export const moduleNames = ["veeamblksnap", "bdevfilter"] as const;

/** Control devices that appear once the out-of-tree modules are loaded. */
export const controlDevices = ["/dev/bdevfilter", "/dev/veeamblksnap"] as const;

/** The upstream control device. */
export const upstreamControlDevice = "/dev/blksnap-control";

/** The module name of the upstream blksnap (when it is a module, not built in). */
export const upstreamModuleName = "blksnap";

/** The two profiles, as the service reports them. */
export type BlksnapProfile = "upstream" | "outoftree";

/** How this run has blksnap: the out-of-tree modules, or the kernel's own. */
export type BlksnapSource = "outoftree" | "builtin" | "module";

const buildDir = "/var/lib/blksnap-lab/module-build";

/** The running kernel's release (uname -r). */
export async function kernelRelease(): Promise<string> {
  return (await run("uname", ["-r"])).stdout.trim();
}

/**
 * The kbuild folder to build the out-of-tree module against: the --kernel-headers tree of a
 * --kernel-image, else the running kernel's installed headers.
 *
 * @throws {Error} for a --kernel-image without --kernel-headers: the image's headers are for
 * another kernel, and building against them is never tried.
 */
export async function headersDir(): Promise<string> {
  const lab = labEnv();
  if (lab.kernelHeaders !== undefined) return lab.kernelHeaders;
  if (lab.kernelImage !== undefined) {
    throw new Error(
      `The kernel ${lab.kernelImage} was booted with --kernel-image and no --kernel-headers: ` +
        "there is nothing to build a module against",
    );
  }
  return `/lib/modules/${await kernelRelease()}/build`;
}

/** How this run has blksnap, or undefined when it has none. */
export function blksnapSource(): BlksnapSource | undefined {
  const lab = labEnv();
  if (lab.moduleSrc !== undefined || lab.moduleKo !== undefined) return "outoftree";
  return lab.kernelBlksnap;
}

/** The profile the run's blksnap has (undefined without one). */
export function expectedProfile(): BlksnapProfile | undefined {
  const source = blksnapSource();
  if (source === undefined) return undefined;
  return source === "outoftree" ? "outoftree" : "upstream";
}

/** The profile the kernel shows now: which control device exists (undefined: none). */
export function presentProfile(): BlksnapProfile | undefined {
  if (exists(upstreamControlDevice)) return "upstream";
  if (exists("/dev/veeamblksnap")) return "outoftree";
  return undefined;
}

/** The control devices of `profile`. */
export function profileControlDevices(profile: BlksnapProfile): readonly string[] {
  return profile === "upstream" ? [upstreamControlDevice] : controlDevices;
}

/**
 * VERSION as each profile answers it: 2.x for the upstream series (lk6.15 reports 2.0.0.0),
 * 7.x for the out-of-tree module (VAL-7.0).
 */
export function versionPattern(profile: BlksnapProfile): RegExp {
  return profile === "upstream" ? /^2\.\d+\.\d+\.\d+$/ : /^7\.\d+\.\d+\.\d+$/;
}

/**
 * The image device of the origin `major:minor` in `profile` (ABI.md), which SNAPSHOTINFO must
 * report: /dev/blksnap-M-m (upstream), /dev/veeamblksnapimg_M:m (outoftree).
 */
export function imageDevicePath(profile: BlksnapProfile, device: DeviceNumber): string {
  const { major, minor } = device;
  return profile === "upstream"
    ? `/dev/blksnap-${major}-${minor}`
    : `/dev/veeamblksnapimg_${major}:${minor}`;
}

/** The image device of the block device at `path` in `profile` (see {@link imageDevicePath}). */
export function imageDeviceOf(profile: BlksnapProfile, path: string): string {
  const rdev = Deno.statSync(path).rdev;
  if (rdev === null || rdev === 0) throw new Error(`${path} is not a device node`);
  return imageDevicePath(profile, splitDeviceNumber(rdev));
}

/**
 * Names of the modules that must be unloadable after a case (nothing leaked): the out-of-tree
 * pair, `blksnap` when it is a module of the kernel, none when it is built in.
 */
export function unloadableModules(): readonly string[] {
  const source = blksnapSource();
  if (source === "outoftree") return moduleNames;
  if (source === "module") return [upstreamModuleName];
  return [];
}

/**
 * Copies `source` to `target` and builds it with `make -C <headers> M=<target> modules`.
 * Returns the make output.
 *
 * @throws {Error} when make fails (its output is in the message).
 */
export async function buildModule(source: string, target: string): Promise<string> {
  const headers = await headersDir();
  await run("rm", ["-rf", target]);
  await run("mkdir", ["-p", target]);
  await run("cp", ["-a", `${source}/.`, target]);
  const nproc = (await run("nproc", [])).stdout.trim();
  const result = await run("make", ["-C", headers, `M=${target}`, `-j${nproc}`, "modules"]);
  return result.stdout + result.stderr;
}

let built: Promise<string> | undefined;

/**
 * The folder holding the module files: the prebuilt folder (--module-ko), the build of the
 * source folder (--module-src), made once per guest run (its output goes to
 * $LAB_OUT/module-build.log), or, for the kernel's own blksnap, the kernel's module folder.
 *
 * @throws {Error} when no module was given and the kernel has none, or the build fails.
 */
export async function moduleDir(): Promise<string> {
  const lab = labEnv();
  if (lab.moduleKo !== undefined) return lab.moduleKo;
  if (lab.moduleSrc === undefined) {
    if (lab.kernelBlksnap !== undefined) return `/lib/modules/${await kernelRelease()}`;
    throw new Error("No blksnap module was given to the lab, and the kernel has none");
  }
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

/** True when the kernel has module `name` loaded (built-in modules with parameters count). */
export function isLoaded(name: string): boolean {
  return exists(`/sys/module/${name}`);
}

/**
 * Makes blksnap usable and waits for its control devices: the out-of-tree modules are loaded
 * from `dir` (bdevfilter, then veeamblksnap), the kernel's blksnap module with modprobe, a
 * built-in one needs nothing.
 *
 * @throws {Error} when loading fails or a control device does not appear within 10 s.
 */
export async function loadModules(dir?: string): Promise<void> {
  const source = blksnapSource();
  if (source === "outoftree") {
    const from = dir ?? await moduleDir();
    for (const file of moduleFiles) {
      const name = file.replace(/\.ko$/, "");
      if (!isLoaded(name)) await run("insmod", [`${from}/${file}`]);
    }
  } else if (source === "module" && !isLoaded(upstreamModuleName)) {
    await run("modprobe", [upstreamModuleName]);
  }
  for (const device of profileControlDevices(expectedProfile() ?? "outoftree")) {
    await waitFor(`${device} to appear`, () => exists(device));
  }
}

/**
 * Loads the modules for one case ({@link loadModules}) and has `stack` unload them when the
 * case ends, checking that none of the out-of-tree modules stays loaded.
 */
export async function modulesForCase(stack: AsyncDisposableStack): Promise<void> {
  await loadModules(await moduleDir());
  stack.defer(async () => {
    await unloadModules();
    for (const name of moduleNames) assert.ok(!isLoaded(name), `${name} is still loaded`);
  });
}

/**
 * Unloads what {@link loadModules} loaded (those modules that are loaded; built in: nothing),
 * retrying for up to 5 s while one is in use: a snapshot's event reader may still sleep in
 * SNAPSHOT_WAIT_EVENT for one slice (at most 1 s) after its driver closed, holding the control
 * device until the call returns.
 */
export async function unloadModules(): Promise<void> {
  for (const name of unloadableModules()) {
    if (!isLoaded(name)) continue;
    await waitFor(
      `${name} to unload`,
      async () => (await run("rmmod", [name], { allowFailure: true })).code === 0,
      { timeoutMs: 5000 },
    );
  }
}

/**
 * What the upstream blk-filter still holds: the block devices whose `filter` attribute in
 * /sys/class/block names a filter, and the blksnap image nodes in /dev. Empty when a case left
 * nothing behind; the check that stands in for rmmod where blksnap is built in.
 */
export function upstreamLeftovers(): string[] {
  const left: string[] = [];
  for (const entry of Deno.readDirSync("/sys/class/block")) {
    try {
      const filter = Deno.readTextFileSync(`/sys/class/block/${entry.name}/filter`).trim();
      if (filter !== "") left.push(`${entry.name} has the filter ${filter}`);
    } catch {
      // no filter attribute: a kernel without blk-filter, or the device went away
    }
  }
  for (const entry of Deno.readDirSync("/dev")) {
    if (/^blksnap-\d+-\d+$/.test(entry.name)) left.push(`/dev/${entry.name} is still there`);
  }
  return left;
}
