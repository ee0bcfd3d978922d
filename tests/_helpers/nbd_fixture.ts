/**
 * Fixtures for NBD integration tests: a real server on a free loopback port
 * and a Unix socket in a temp dir, URIs for the clients, and a runner for the
 * real client tools (nbdinfo, nbdcopy, nbdsh, qemu-img, qemu-io) that skips
 * tests when a tool is missing.
 *
 * @module
 */

import { type ExportProvider, staticProvider } from "../../src/nbd/export.ts";
import type { NbdExport } from "../../src/nbd/export.ts";
import type { NbdLogLevel } from "../../src/nbd/log.ts";
import { type NbdServer, startNbdServer } from "../../src/nbd/server.ts";
import { nbdTestWorkers } from "./nbd_workers_mode.ts";

/** A running server and where to reach it. */
export interface NbdFixture {
  /** The server. */
  server: NbdServer;
  /** Temp dir holding the Unix socket (and free for the test's files). */
  dir: string;
  /** nbd:// URI of `exportName` over TCP. */
  tcpUri(exportName: string): string;
  /** nbd+unix:// URI of `exportName` over the Unix socket. */
  unixUri(exportName: string): string;
  /** Log messages at warn level or above. */
  warnings: string[];
  /** Every log message, as "level: message". */
  log: string[];
}

/**
 * Starts a server for `exports` (or a provider) on TCP and a Unix socket,
 * runs `body`, and always closes the server and removes the temp dir.
 */
export async function withNbdServer(
  exports: NbdExport[] | ExportProvider,
  body: (fixture: NbdFixture) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbd-test-" });
  const warnings: string[] = [];
  const log: string[] = [];
  const provider = Array.isArray(exports) ? staticProvider(exports) : exports;
  const server = await startNbdServer(provider, {
    tcp: { port: 0 },
    unixPath: `${dir}/nbd.sock`,
    workers: nbdTestWorkers(),
    logger: (level: NbdLogLevel, message: string) => {
      log.push(`${level}: ${message}`);
      if (level === "warn" || level === "error") warnings.push(message);
    },
  });
  try {
    await body({
      server,
      dir,
      warnings,
      log,
      tcpUri: (name) => `nbd://127.0.0.1:${server.tcpPort}/${encodeURIComponent(name)}`,
      unixUri: (name) => `nbd+unix:///${encodeURIComponent(name)}?socket=${server.unixPath}`,
    });
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The outcome of a finished command. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `command` with `args` to completion (PATH starts with /usr/bin so the
 * Debian tools and their python3 are found); `stdin` is written to it.
 */
export async function runTool(
  command: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
): Promise<ToolResult> {
  const child = new Deno.Command(command, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: {
      ...options.env,
      PATH: `/usr/bin:/bin:${Deno.env.get("PATH") ?? ""}`,
      LIBNBD_DEBUG: "0",
    },
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Like {@link runTool}, but throws with the tool's output when it exits non-zero. */
export async function runToolOk(
  command: string,
  args: string[],
  options: { stdin?: string } = {},
): Promise<string> {
  const result = await runTool(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(" ")} exited ${result.code}\n${result.stdout}\n${result.stderr}`,
    );
  }
  return result.stdout;
}

const missing = new Map<string, boolean>();

/**
 * True when any of `tools` is not installed; prints which one once, so a
 * test can be `ignore`d with the reason shown.
 */
export function toolsMissing(...tools: string[]): boolean {
  let absent = false;
  for (const tool of tools) {
    if (!missing.has(tool)) {
      const found = ["/usr/bin", "/bin", "/usr/sbin"].some((dir) => {
        try {
          return Deno.statSync(`${dir}/${tool}`).isFile;
        } catch {
          return false;
        }
      });
      if (!found) console.log(`skipping: ${tool} is not installed (apt-get install it)`);
      missing.set(tool, !found);
    }
    absent ||= missing.get(tool)!;
  }
  return absent;
}

/**
 * Runs an nbdsh (python) script; `uri` is defined for it as a python string,
 * and `h` is a fresh, unconnected handle (the script sets it up and connects).
 */
export async function nbdsh(uri: string, script: string): Promise<string> {
  return await runToolOk("/usr/bin/nbdsh", ["-c", `uri = ${JSON.stringify(uri)}`, "-c", script]);
}

/** `length` bytes of a deterministic pattern that differs per `seed`. */
export function pattern(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[i] = state & 0xff;
  }
  return bytes;
}

/** Polls `predicate` every 10 ms until true; throws after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs = 2000): Promise<void> {
  for (let waited = 0; !predicate(); waited += 10) {
    if (waited >= timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
