/**
 * What every client command shares: parsing its flags (plus the common
 * --url, --token-file, --json and --help), building the typed client, and
 * printing results as JSON or as human text.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { resolve } from "node:path";
import { type BlksnapClient, createClient } from "../client/client.ts";
import { CliFailure, UsageError } from "./exit_codes.ts";

/** Default address of the service. */
export const DEFAULT_URL = "http://127.0.0.1:8037";

/** Where a command writes. */
export interface CliIo {
  /** Standard output text. */
  out(text: string): void;
  /** Standard error text. */
  err(text: string): void;
  /** Environment variable lookup. */
  env(name: string): string | undefined;
}

/** The process's standard streams and environment. */
export const processIo: CliIo = {
  out: (text) => void Deno.stdout.writeSync(new TextEncoder().encode(text)),
  err: (text) => void Deno.stderr.writeSync(new TextEncoder().encode(text)),
  env: (name) => Deno.env.get(name),
};

/** A command's flag declarations (node:util parseArgs options). */
export type FlagSpec = NonNullable<ParseArgsConfig["options"]>;

/** Flags every client command takes. */
export const clientFlags: FlagSpec = {
  url: { type: "string" },
  "token-file": { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
};

/** Shared help text of the client flags. */
export const CLIENT_FLAGS_HELP =
  `A DEVICE is a device id or the path it was attached from (/dev/sdb,
./disk0.img); a SNAPSHOT is a snapshot id (a UUID).

Common options (anywhere on the line):
  --url URL          service address (env BLKSNAP_URL, default ${DEFAULT_URL});
                     a trailing /v1 is fine
  --token-file FILE  bearer token file (env BLKSNAP_TOKEN_FILE, or the token in BLKSNAP_TOKEN)
  --json             print machine-readable JSON
  -h, --help         show this help
`;

/** Parsed command line of a client command. */
export interface Parsed {
  /** Flag values. */
  values: Record<string, string | boolean | string[] | undefined>;
  /** Positional arguments. */
  positionals: string[];
}

/** Parses `args` against `flags` plus the common client flags; unknown flags are usage errors. */
export function parseCommand(args: string[], flags: FlagSpec): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...clientFlags, ...flags },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Parsed["values"], positionals };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Reads the token from --token-file, BLKSNAP_TOKEN_FILE or BLKSNAP_TOKEN. */
export async function readToken(parsed: Parsed, io: CliIo): Promise<string | undefined> {
  const file = (parsed.values["token-file"] as string | undefined) ?? io.env("BLKSNAP_TOKEN_FILE");
  if (file) {
    try {
      return (await Deno.readTextFile(file)).trim();
    } catch (error) {
      throw new UsageError(`Cannot read the token file ${file}: ${(error as Error).message}`);
    }
  }
  return io.env("BLKSNAP_TOKEN") || undefined;
}

/**
 * The service's base URL from `text`: an http(s) URL, with or without the
 * API's `/v1` (README's examples give `http://127.0.0.1:8037/v1`) and
 * trailing slashes. UsageError for anything else.
 */
export function serviceBaseUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--url must be a URL like ${DEFAULT_URL}, got "${text}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`--url must be an http:// or https:// URL, got "${text}"`);
  }
  if (url.search || url.hash) {
    throw new UsageError(`--url must not carry a query or fragment, got "${text}"`);
  }
  const path = url.pathname.replace(/\/+$/, "").replace(/\/v1$/, "");
  return `${url.origin}${path}`;
}

/** The typed client for the service named by --url / BLKSNAP_URL. */
export async function clientFor(parsed: Parsed, io: CliIo): Promise<BlksnapClient> {
  const baseUrl = serviceBaseUrl(
    (parsed.values.url as string | undefined) ?? io.env("BLKSNAP_URL") ?? DEFAULT_URL,
  );
  return createClient({ baseUrl, token: await readToken(parsed, io) });
}

/** `path` made absolute against the working directory (the service has another one). */
export function absolutePath(path: string): string {
  return resolve(path);
}

/** A one-line reason from a Deno file error ("No such file or directory"). */
export function reasonOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\s*\(os error \d+\).*$/s, "").split("\n")[0];
}

/** Writes `data` to the local file `path`; CliFailure naming the file and the reason. */
export async function writeLocalFile(path: string, data: Uint8Array): Promise<void> {
  try {
    await Deno.writeFile(path, data);
  } catch (error) {
    throw new CliFailure(`Cannot write ${path}: ${reasonOf(error)}`, { cause: error });
  }
}

/** Opens the local file `path` for writing; CliFailure naming the file and the reason. */
export async function createLocalFile(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { write: true, create: true, truncate: true });
  } catch (error) {
    throw new CliFailure(`Cannot write ${path}: ${reasonOf(error)}`, { cause: error });
  }
}

/** Prints `value` as JSON when --json was given, else the human text `human()` makes. */
export function print(parsed: Parsed, io: CliIo, value: unknown, human: () => string): void {
  if (parsed.values.json) io.out(JSON.stringify(value, null, 2) + "\n");
  else io.out(human());
}

/** The positional at `index`, or a usage error naming it. */
export function positional(parsed: Parsed, index: number, name: string): string {
  const value = parsed.positionals[index];
  if (value === undefined) throw new UsageError(`missing ${name}`);
  return value;
}

/** Parses a non-negative integer argument, or a usage error naming it. */
export function integerArgument(text: string, name: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`${name} must be a non-negative integer, got "${text}"`);
  }
  return Number(text);
}

/** Parses a byte size with an optional K/M/G/T suffix (powers of 1024). */
export function sizeArgument(text: string, name: string): number {
  const match = /^(\d+)\s*([KMGT]i?B?)?$/i.exec(text.trim());
  if (!match) {
    throw new UsageError(`${name} must be a size like 1073741824, 512M or 2G, got "${text}"`);
  }
  const power = { "": 0, K: 1, M: 2, G: 3, T: 4 }[(match[2] ?? "").charAt(0).toUpperCase()] ?? 0;
  const value = Number(match[1]) * 1024 ** power;
  if (!Number.isSafeInteger(value)) throw new UsageError(`${name} is too large: "${text}"`);
  return value;
}
