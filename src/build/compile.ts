/**
 * `deno task compile`: builds the single binary dist/blksnapctl with `deno compile`.
 *
 * `deno compile` writes the program into a copy of denort, Deno's runtime without the tooling. It
 * reads that binary from the DENORT_BIN environment variable when set, otherwise it downloads
 * `denort-<target>.zip` of its own version from dl.deno.land. npm does not publish denort: the
 * `deno` npm package (what `npx deno` runs) carries only the full deno CLI, and a binary compiled
 * on the full CLI ignores the embedded program and behaves as `deno` itself. So for an offline
 * build, unzip the matching denort release somewhere and point DENORT_BIN at it; this script
 * refuses a DENORT_BIN that is the full CLI and, when the download fails, says exactly which file
 * is missing.
 *
 * @module
 */

import { WORKER_MODULE_URL } from "../nbd/worker/worker_module.ts";
import { parseArgs } from "node:util";
import { ServiceError } from "../errors.ts";

/** The NBD Worker plane's Worker module, loaded by URL, so `deno compile` must be told of it. */
const NBD_WORKER = WORKER_MODULE_URL.pathname;

/** Options of {@link compile}. */
export interface CompileOptions {
  /** Output binary (default dist/blksnapctl). */
  output: string;
  /** The denort binary to build on; default: the DENORT_BIN environment variable. */
  denortBin?: string;
  /** The deno CLI that compiles (default: the running one). */
  denoBin?: string;
}

/** The Rust target triple of this machine, as Deno names its release files. */
export function hostTarget(): string {
  const { arch, os } = Deno.build;
  if (os === "linux") return `${arch}-unknown-linux-gnu`;
  if (os === "darwin") return `${arch}-apple-darwin`;
  if (os === "windows") return `${arch}-pc-windows-msvc`;
  return `${arch}-${os}`;
}

/** Where `deno compile` of this Deno version downloads denort from. */
export function denortUrl(
  version: string = Deno.version.deno,
  target: string = hostTarget(),
): string {
  return `https://dl.deno.land/release/v${version}/denort-${target}.zip`;
}

/**
 * What is missing when denort cannot be had, and how to supply it; `failure` says why the
 * download failed, when it was tried.
 */
export function missingDenortMessage(
  options: { version?: string; failure?: string } = {},
): string {
  const version = options.version ?? Deno.version.deno;
  const failed = options.failure ? ` and that download failed (${options.failure})` : "";
  return `deno compile needs denort ${version} (the Deno runtime a compiled binary is built on), ` +
    `which it downloads from ${
      denortUrl(version)
    } unless DENORT_BIN names a local copy${failed}. ` +
    `npm does not publish denort (the deno npm package ships only the full CLI, which cannot ` +
    `stand in for it). Fetch that zip on a connected machine, unzip it, and run again with ` +
    `DENORT_BIN=/path/to/denort.`;
}

/**
 * Checks that `path` can serve as DENORT_BIN: an executable file that is not the full deno CLI.
 *
 * @throws {ServiceError} NOT_FOUND when the file is missing, INVALID_ARGUMENT when it is not an
 * executable file or is the full deno CLI.
 */
export async function checkDenortBin(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new ServiceError("NOT_FOUND", `Cannot use DENORT_BIN=${path}: the file does not exist`, {
      cause: error,
    });
  }
  if (!info.isFile || info.mode === null || (info.mode & 0o111) === 0) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot use DENORT_BIN=${path}: it is not an executable file`,
    );
  }
  // The full CLI evaluates code given to `eval`; denort runs only an embedded program.
  const probe = "denort-probe-" + crypto.randomUUID();
  const result = await new Deno.Command(path, {
    args: ["eval", `console.log(${JSON.stringify(probe)})`],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
    signal: AbortSignal.timeout(30_000),
  }).output().catch(() => undefined);
  if (result !== undefined && new TextDecoder().decode(result.stdout).includes(probe)) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot use DENORT_BIN=${path}: it is the full deno CLI, not denort; a binary built on it ` +
        `ignores the embedded program. ${missingDenortMessage()}`,
    );
  }
}

/**
 * Compiles `entry` into a single executable with all permissions granted.
 *
 * @throws {ServiceError} NOT_FOUND when `entry` or DENORT_BIN is missing, INVALID_ARGUMENT for an
 * unusable DENORT_BIN, UNAVAILABLE when denort cannot be downloaded (the detail names the file),
 * IO for any other `deno compile` failure (its output is in the detail).
 */
export async function compile(entry: string, options: CompileOptions): Promise<void> {
  try {
    await Deno.stat(entry);
  } catch (error) {
    throw new ServiceError("NOT_FOUND", `Cannot compile ${entry}: the file does not exist`, {
      cause: error,
    });
  }
  const denortBin = options.denortBin ?? Deno.env.get("DENORT_BIN");
  if (denortBin !== undefined && denortBin !== "") await checkDenortBin(denortBin);
  const env: Record<string, string> = { NO_COLOR: "1" };
  if (denortBin) env.DENORT_BIN = denortBin;
  const result = await new Deno.Command(options.denoBin ?? Deno.execPath(), {
    args: ["compile", "--allow-all", "--include", NBD_WORKER, "--output", options.output, entry],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (result.success) return;
  const text = new TextDecoder().decode(result.stderr) + new TextDecoder().decode(result.stdout);
  if (!denortBin && /dl\.deno\.land|Setting up base binary/.test(text)) {
    // deno prints the chain of causes as "  N: ..." lines; the last one is the root cause.
    const causes = text.split("Stack backtrace")[0].split("\n").filter((line) =>
      /^\s+\d+: /.test(line)
    );
    const failure = causes.at(-1)?.replace(/^\s+\d+: /, "").trim();
    throw new ServiceError(
      "UNAVAILABLE",
      `Cannot compile ${options.output}: ${missingDenortMessage({ failure })}`,
    );
  }
  throw new ServiceError("IO", `Cannot compile ${options.output}: deno compile failed: ${text}`);
}

/** Parsed command line of `deno task compile`. */
export interface CompileArgs {
  /** Entry module (default src/cli/main.ts). */
  readonly entry: string;
  /** Output binary (default dist/blksnapctl). */
  readonly out: string;
  /** Print usage and exit. */
  readonly help: boolean;
}

/** Usage text of `deno task compile`. */
export const compileUsage: string = `Usage: deno task compile [--entry FILE] [--out FILE]

Builds one executable with \`deno compile\` (all permissions granted).
  --entry FILE   entry module (default src/cli/main.ts)
  --out FILE     output binary (default dist/blksnapctl)
Environment: DENORT_BIN=/path/to/denort builds offline on a local denort of the same Deno version.
`;

/**
 * Parses the arguments of `deno task compile`.
 *
 * @throws {ServiceError} INVALID_ARGUMENT for unknown options or stray arguments.
 */
export function parseCompileArgs(args: readonly string[]): CompileArgs {
  try {
    const { values } = parseArgs({
      args: [...args],
      options: {
        entry: { type: "string", default: "src/cli/main.ts" },
        out: { type: "string", default: "dist/blksnapctl" },
        help: { type: "boolean", short: "h", default: false },
      },
      allowPositionals: false,
    });
    return { entry: values.entry, out: values.out, help: values.help };
  } catch (error) {
    throw new ServiceError("INVALID_ARGUMENT", (error as Error).message, { cause: error });
  }
}

/** Runs `deno task compile` with `args`; returns the exit code (0, 1 failure, 2 usage). */
export async function main(args: readonly string[]): Promise<number> {
  let parsed: CompileArgs;
  try {
    parsed = parseCompileArgs(args);
  } catch (error) {
    console.error(`compile: ${(error as Error).message}\n\n${compileUsage}`);
    return 2;
  }
  if (parsed.help) {
    console.log(compileUsage);
    return 0;
  }
  try {
    await compile(parsed.entry, { output: parsed.out });
    const { size } = await Deno.stat(parsed.out);
    console.log(`compile: wrote ${parsed.out} (${size} bytes)`);
    return 0;
  } catch (error) {
    console.error(`compile: ${(error as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
