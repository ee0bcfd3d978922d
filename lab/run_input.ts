/**
 * The input of one guest run, assembled on the host into a tar archive the guest reads from its
 * lab-in disk: the runner (lab/guest/run.sh), lab.env (settings as shell assignments), the e2e
 * test files bundled one by one for Deno without network (tests/<name>_test.js), the module
 * input (module-src/ or module-ko/), and what a custom kernel brings (kernel-modules/: its
 * lib/modules/<release> folder; kernel-headers/: its kbuild tree without object files).
 *
 * @module
 */

import { relative } from "node:path";
import { ServiceError } from "../src/errors.ts";
import { bundle } from "../src/build/bundle.ts";
import { runLogged } from "./process.ts";

/** Which files run and which name filter applies, from --only. */
export interface TestSelection {
  /** Test files (paths relative to the e2e folder). */
  readonly files: readonly string[];
  /** Name filter for deno test, when --only matched no file. */
  readonly filter?: string;
}

/** Lists the e2e test files (`*_test.ts`, outside `_helpers`) under `dir`, relative, sorted. */
export async function listTestFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (sub: string) => {
    for await (const entry of Deno.readDir(`${dir}/${sub}`)) {
      const path = sub === "" ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory && !entry.name.startsWith("_")) await walk(path);
      if (entry.isFile && entry.name.endsWith("_test.ts")) files.push(path);
    }
  };
  await walk("");
  return files.sort();
}

/**
 * Applies --only: the files whose path contains `only`; when none does, every file with `only`
 * as deno test's name filter.
 */
export function selectTests(files: readonly string[], only?: string): TestSelection {
  if (only === undefined) return { files };
  const matching = files.filter((file) => file.includes(only));
  return matching.length > 0 ? { files: matching } : { files, filter: only };
}

/** Quotes `value` for a POSIX shell. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** Renders settings as shell assignments (names must be shell identifiers). */
export function renderEnv(settings: Readonly<Record<string, string>>): string {
  return Object.entries(settings).map(([name, value]) => {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) {
      throw new ServiceError("INVALID_ARGUMENT", `Cannot export ${name}: not a shell name`);
    }
    return `${name}=${shellQuote(value)}\n`;
  }).join("");
}

/** True for files of a kbuild tree that are build products rather than source. */
export function isBuildProduct(name: string): boolean {
  return /\.(o|ko|mod|mod\.c|a|cmd|order|symvers|tmp)$/.test(name) ||
    name === ".tmp_versions" || name === ".git";
}

/**
 * Copies a module source folder without build products (the guest builds it afresh).
 *
 * @throws {ServiceError} NOT_FOUND when `source` has no Makefile or Kbuild.
 */
export async function copyModuleSource(source: string, target: string): Promise<number> {
  const hasBuildFile = ["Makefile", "Kbuild"].some((name) => {
    try {
      return Deno.statSync(`${source}/${name}`).isFile;
    } catch {
      return false;
    }
  });
  if (!hasBuildFile) {
    throw new ServiceError(
      "NOT_FOUND",
      `Cannot use ${source} as --module-src: it has no Makefile or Kbuild`,
    );
  }
  let count = 0;
  const copy = async (from: string, to: string) => {
    await Deno.mkdir(to, { recursive: true });
    for await (const entry of Deno.readDir(from)) {
      if (isBuildProduct(entry.name)) continue;
      if (entry.isDirectory) await copy(`${from}/${entry.name}`, `${to}/${entry.name}`);
      else if (entry.isFile) {
        await Deno.copyFile(`${from}/${entry.name}`, `${to}/${entry.name}`);
        count += 1;
      }
    }
  };
  await copy(source, target);
  return count;
}

/**
 * Copies the .ko files of `source`.
 *
 * @throws {ServiceError} NOT_FOUND when there is none.
 */
export async function copyModuleObjects(source: string, target: string): Promise<string[]> {
  const names: string[] = [];
  await Deno.mkdir(target, { recursive: true });
  for await (const entry of Deno.readDir(source)) {
    if (entry.isFile && entry.name.endsWith(".ko")) {
      await Deno.copyFile(`${source}/${entry.name}`, `${target}/${entry.name}`);
      names.push(entry.name);
    }
  }
  if (names.length === 0) {
    throw new ServiceError("NOT_FOUND", `Cannot use ${source} as --module-ko: it has no .ko file`);
  }
  return names.sort();
}

/** True for files of a kernel build tree that building an external module does not need. */
export function isKernelBuildOutput(name: string): boolean {
  return /\.(o|a|ko|cmd|mod|mod\.c|order|tmp|xz|gz|zst)$/.test(name) ||
    /^(vmlinux|vmlinux\..*|System\.map|bzImage|\.git|Documentation)$/.test(name);
}

/**
 * Copies the tree `source` to `target` (symbolic links as links), leaving out the names `skip`
 * says; returns the number of files copied.
 */
export async function copyTree(
  source: string,
  target: string,
  options: { skip?: (name: string) => boolean } = {},
): Promise<number> {
  const skip = options.skip ?? (() => false);
  let count = 0;
  const copy = async (from: string, to: string) => {
    await Deno.mkdir(to, { recursive: true });
    for await (const entry of Deno.readDir(from)) {
      if (skip(entry.name)) continue;
      const path = `${from}/${entry.name}`;
      if (entry.isSymlink) await Deno.symlink(await Deno.readLink(path), `${to}/${entry.name}`);
      else if (entry.isDirectory) await copy(path, `${to}/${entry.name}`);
      else if (entry.isFile) {
        await Deno.copyFile(path, `${to}/${entry.name}`);
        count += 1;
      }
    }
  };
  await copy(source, target);
  return count;
}

/**
 * Copies a custom kernel's module folder (`<prefix>/lib/modules/<release>` of
 * `make modules_install`) without its build and source links, which point into the host.
 *
 * @throws {ServiceError} NOT_FOUND when it has no modules.order or modules.builtin (not such a
 * folder), INVALID_ARGUMENT when it is for another release than the kernel image.
 */
export async function copyKernelModules(
  source: string,
  target: string,
  options: { release: string },
): Promise<number> {
  const { release } = options;
  const marker = ["modules.order", "modules.builtin"].some((name) => {
    try {
      return Deno.statSync(`${source}/${name}`).isFile;
    } catch {
      return false;
    }
  });
  if (!marker) {
    throw new ServiceError(
      "NOT_FOUND",
      `Cannot use ${source} as --kernel-modules: it has no modules.order or modules.builtin ` +
        `(give the lib/modules/<release> folder that make modules_install wrote)`,
    );
  }
  const name = source.replace(/\/+$/, "").split("/").pop();
  if (name !== release) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot use ${source} as --kernel-modules: it is named ${name}, the kernel image is ` +
        `release ${release}`,
      { field: "kernel-modules" },
    );
  }
  return await copyTree(source, target, {
    skip: (entry) => entry === "build" || entry === "source",
  });
}

/**
 * Copies a custom kernel's kbuild tree (what `make -C <tree> M=<module> modules` needs: its
 * Makefile, .config, include/, scripts/, Module.symvers) without object files and images.
 *
 * @throws {ServiceError} NOT_FOUND when it is not a configured kbuild tree.
 */
export async function copyKernelHeaders(source: string, target: string): Promise<number> {
  for (const name of ["Makefile", "include/config/auto.conf"]) {
    try {
      Deno.statSync(`${source}/${name}`);
    } catch {
      throw new ServiceError(
        "NOT_FOUND",
        `Cannot use ${source} as --kernel-headers: it has no ${name} (give a configured ` +
          `kbuild tree, after make modules_prepare)`,
      );
    }
  }
  return await copyTree(source, target, { skip: isKernelBuildOutput });
}

/** Options of {@link prepareRunInput}. */
export interface RunInputOptions {
  readonly e2eDir: string;
  readonly runnerScript: string;
  /** The repository's README.md, whose recipes cases run as written (token_recipes.ts). */
  readonly readme?: string;
  readonly selection: TestSelection;
  readonly kernelPackage: string;
  readonly moduleSrc?: string;
  readonly moduleKo?: string;
  /** The release of the custom kernel this run boots (--kernel-image), if any. */
  readonly kernelRelease?: string;
  /** The custom kernel's module folder and kbuild tree, if given. */
  readonly kernelModules?: string;
  readonly kernelHeaders?: string;
}

/**
 * Writes the run's input folder `inDir` and packs it into `tarPath`. Returns the bundled test
 * files (relative to `inDir`).
 *
 * @throws {ServiceError} from bundling or from the module input checks.
 */
export async function prepareRunInput(
  inDir: string,
  tarPath: string,
  options: RunInputOptions,
): Promise<string[]> {
  await Deno.mkdir(`${inDir}/tests`, { recursive: true });
  await Deno.copyFile(options.runnerScript, `${inDir}/run.sh`);
  if (options.readme !== undefined) await Deno.copyFile(options.readme, `${inDir}/README.md`);
  const settings: Record<string, string> = { LAB_KERNEL_PACKAGE: options.kernelPackage };
  if (options.selection.filter !== undefined) settings.LAB_FILTER = options.selection.filter;
  if (options.kernelRelease !== undefined) settings.LAB_KERNEL_IMAGE = options.kernelRelease;
  await Deno.writeTextFile(`${inDir}/lab.env`, renderEnv(settings));
  const entries = options.selection.files.map((file) => `${options.e2eDir}/${file}`);
  // No source map: deno would then name each case after the helper that declared it
  // (labTest) rather than its test file; the bundle is readable code with file markers.
  const result = await bundle(entries, { outDir: `${inDir}/tests`, outBase: options.e2eDir });
  if (options.moduleSrc !== undefined) {
    await copyModuleSource(options.moduleSrc, `${inDir}/module-src`);
  }
  if (options.moduleKo !== undefined) {
    await copyModuleObjects(options.moduleKo, `${inDir}/module-ko`);
  }
  if (options.kernelModules !== undefined) {
    if (options.kernelRelease === undefined) {
      throw new ServiceError("INVALID_ARGUMENT", "Kernel modules need the kernel image's release");
    }
    await copyKernelModules(options.kernelModules, `${inDir}/kernel-modules`, {
      release: options.kernelRelease,
    });
  }
  if (options.kernelHeaders !== undefined) {
    await copyKernelHeaders(options.kernelHeaders, `${inDir}/kernel-headers`);
  }
  await runLogged("tar", ["-C", inDir, "--owner=0", "--group=0", "-cf", tarPath, "."]);
  return result.outputs.map((path) => relative(inDir, path)).sort();
}
