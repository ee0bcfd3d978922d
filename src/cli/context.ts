/**
 * What every client command shares: parsing its flags (plus the common
 * --url, --token-file, --json and --help), building the typed client, and
 * printing results as JSON or as human text.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { type BlksnapClient, createClient } from "../client/client.ts";
import { UsageError } from "./exit_codes.ts";

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
export const CLIENT_FLAGS_HELP = `Common options:
  --url URL          service address (env BLKSNAP_URL, default ${DEFAULT_URL})
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

/** The typed client for the service named by --url / BLKSNAP_URL. */
export async function clientFor(parsed: Parsed, io: CliIo): Promise<BlksnapClient> {
  const baseUrl = (parsed.values.url as string | undefined) ?? io.env("BLKSNAP_URL") ?? DEFAULT_URL;
  try {
    new URL(baseUrl);
  } catch {
    throw new UsageError(`--url ${baseUrl} is not a URL`);
  }
  return createClient({ baseUrl, token: await readToken(parsed, io) });
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
