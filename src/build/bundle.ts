/**
 * `deno task bundle`: bundles the service (src/cli/main.ts by default) with esbuild into one ESM
 * file, dist/blksnapctl.js, that runs with `deno run -A dist/blksnapctl.js ...` on a machine with
 * nothing but the deno binary: npm dependencies are inlined, `node:` builtins stay external.
 * The lab uses the same function to bundle its e2e test files for the guest.
 *
 * Caveats of a single-file bundle: `import.meta.url`, `import.meta.dirname` and
 * `import.meta.main` refer to the bundle in every inlined module, so files loaded next to a module
 * (workers, data files) must be inlined or shipped separately.
 *
 * @module
 */

import * as esbuild from "esbuild";
import { dirname, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { ServiceError } from "../errors.ts";
import { denoResolver } from "./deno_resolver.ts";
import { prepareNodeModules, readImportMap } from "./node_modules.ts";

/** The repository's deno.json (its import map decides how bare imports resolve). */
export const defaultConfigPath: string = new URL("../../deno.json", import.meta.url).pathname;

/** Options of {@link bundle}. */
export interface BundleOptions {
  /** Output file for a single entry point. */
  outFile?: string;
  /** Output folder for several entry points (names mirror the entries relative to `outBase`). */
  outDir?: string;
  /** Common base of the entry points when `outDir` is used. */
  outBase?: string;
  /** deno.json whose import map and lock file apply (default: the repository's). */
  configPath?: string;
  /** Append an inline source map (stack traces then name the original .ts files). */
  sourcemap?: boolean;
}

/** What {@link bundle} wrote. */
export interface BundleResult {
  /** The files written, absolute paths. */
  readonly outputs: readonly string[];
  /** The modules that went into the bundle, relative to the folder of deno.json. */
  readonly inputs: readonly string[];
}

/**
 * Bundles `entryPoints` into ESM for Deno.
 *
 * @throws {ServiceError} NOT_FOUND when an entry point does not exist, INVALID_ARGUMENT for a bad
 * combination of outputs, UNAVAILABLE when the npm packages cannot be laid out, and IO when
 * esbuild reports errors (their text is in the detail).
 */
export async function bundle(
  entryPoints: readonly string[],
  options: BundleOptions,
): Promise<BundleResult> {
  if ((options.outFile === undefined) === (options.outDir === undefined)) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      "Cannot bundle: give exactly one of outFile, outDir",
    );
  }
  if (options.outFile !== undefined && entryPoints.length !== 1) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot bundle ${entryPoints.length} entry points into one outFile: use outDir`,
    );
  }
  for (const entry of entryPoints) {
    if (!(await isFile(entry))) {
      throw new ServiceError("NOT_FOUND", `Cannot bundle ${entry}: the file does not exist`);
    }
  }
  const configPath = resolve(options.configPath ?? defaultConfigPath);
  const map = await readImportMap(configPath);
  const workingDir = dirname(configPath);
  await using nodeModules = await prepareNodeModules(map, {
    lockPath: configPath.replace(/[^/]*$/, "deno.lock"),
  });
  try {
    const result = await esbuild.build({
      absWorkingDir: workingDir,
      entryPoints: entryPoints.map((entry) => resolve(entry)),
      outfile: options.outFile === undefined ? undefined : resolve(options.outFile),
      outdir: options.outDir === undefined ? undefined : resolve(options.outDir),
      outbase: options.outBase === undefined ? undefined : resolve(options.outBase),
      write: false,
      bundle: true,
      format: "esm",
      platform: "node",
      target: "esnext",
      conditions: ["deno", "module"],
      sourcemap: options.sourcemap ? "inline" : false,
      // CommonJS code inside npm packages calls require(); give it Node's, as Deno does.
      banner: {
        js: 'import { createRequire as __bundleCreateRequire } from "node:module";\n' +
          "const require = __bundleCreateRequire(import.meta.url);",
      },
      plugins: [denoResolver(map, nodeModules.dir)],
      metafile: true,
      logLevel: "silent",
    });
    // esbuild names each inlined module in a comment; name npm modules by their place in a
    // node_modules tree rather than by the temporary folder, so equal inputs give equal bytes.
    const tempPrefix = `${relative(workingDir, nodeModules.dir)}/`;
    const stable = (text: string) => text.replaceAll(tempPrefix, "node_modules/");
    for (const file of result.outputFiles) {
      await Deno.mkdir(dirname(file.path), { recursive: true });
      await Deno.writeTextFile(file.path, stable(file.text));
    }
    return {
      outputs: result.outputFiles.map((file) => file.path),
      inputs: Object.keys(result.metafile.inputs).map(stable),
    };
  } catch (error) {
    const failure = error as { errors?: esbuild.Message[] };
    if (failure.errors === undefined) throw error;
    const messages = failure.errors.map((message) =>
      message.location
        ? `${message.location.file}:${message.location.line}: ${message.text}`
        : message.text
    );
    throw new ServiceError(
      "IO",
      `Cannot bundle ${entryPoints.join(", ")}: ${messages.join("; ")}`,
      { cause: error },
    );
  } finally {
    await esbuild.stop();
  }
}

/** Parsed command line of `deno task bundle`. */
export interface BundleArgs {
  /** Entry module (default src/cli/main.ts). */
  readonly entry: string;
  /** Output file (default dist/blksnapctl.js). */
  readonly out: string;
  /** Inline a source map. */
  readonly sourcemap: boolean;
  /** Print usage and exit. */
  readonly help: boolean;
}

/** Usage text of `deno task bundle`. */
export const bundleUsage: string =
  `Usage: deno task bundle [--entry FILE] [--out FILE] [--sourcemap]

Bundles the service into one ESM file that runs with \`deno run -A <out> ...\`.
  --entry FILE   entry module (default src/cli/main.ts)
  --out FILE     output file (default dist/blksnapctl.js)
  --sourcemap    append an inline source map
`;

/**
 * Parses the arguments of `deno task bundle`.
 *
 * @throws {ServiceError} INVALID_ARGUMENT for unknown options or stray arguments.
 */
export function parseBundleArgs(args: readonly string[]): BundleArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        entry: { type: "string", default: "src/cli/main.ts" },
        out: { type: "string", default: "dist/blksnapctl.js" },
        sourcemap: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      allowPositionals: false,
    }));
  } catch (error) {
    throw new ServiceError("INVALID_ARGUMENT", (error as Error).message, { cause: error });
  }
  return {
    entry: values.entry,
    out: values.out,
    sourcemap: values.sourcemap,
    help: values.help,
  };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Runs `deno task bundle` with `args`; returns the process exit code (0, 1 failure, 2 usage). */
export async function main(args: readonly string[]): Promise<number> {
  let parsed: BundleArgs;
  try {
    parsed = parseBundleArgs(args);
  } catch (error) {
    console.error(`bundle: ${(error as Error).message}\n\n${bundleUsage}`);
    return 2;
  }
  if (parsed.help) {
    console.log(bundleUsage);
    return 0;
  }
  try {
    const result = await bundle([parsed.entry], {
      outFile: parsed.out,
      sourcemap: parsed.sourcemap,
    });
    const { size } = await Deno.stat(parsed.out);
    console.log(
      `bundle: wrote ${result.outputs[0]} (${size} bytes, ${result.inputs.length} inputs)`,
    );
    return 0;
  } catch (error) {
    const hint = parsed.entry === "src/cli/main.ts" && (error as ServiceError).code === "NOT_FOUND"
      ? " (pass --entry FILE to bundle another entry)"
      : "";
    console.error(`bundle: ${(error as Error).message}${hint}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
