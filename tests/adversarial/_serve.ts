/**
 * Helpers of the adversarial suite: `blksnap serve` as a subprocess
 * (optionally under `prlimit --nofile`), its resident memory, bounded
 * connection floods on loopback, and a figures log that the suite's report
 * quotes (each test prints one `adversarial:` line with its counts, times
 * and RSS).
 *
 * @module
 */

import { join } from "node:path";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;

/** Options of {@link startServe}. */
export interface ServeOptions {
  /** Extra `serve` flags. */
  args?: string[];
  /** Extra environment. */
  env?: Record<string, string>;
  /** Run under `prlimit --nofile=SOFT:N` (hard limit N). */
  nofile?: number;
  /** The soft limit given with `nofile` (default: the same as the hard one). */
  nofileSoft?: number;
  /** The state folder (default: ROOT/state). */
  stateDir?: string;
}

/** A running `blksnap serve`. */
export interface RunningServe extends AsyncDisposable {
  /** The service's pid (deno itself, prlimit execs it). */
  pid: number;
  /** http://127.0.0.1:PORT */
  baseUrl: string;
  /** NBD TCP port. */
  nbdPort: number;
  /** Standard error lines so far. */
  stderr: string[];
  /** Resident set size now, bytes (VmRSS). */
  rssBytes(): number;
  /** True while the process runs. */
  alive(): boolean;
  /** The exit status once it ends. */
  status: Promise<Deno.CommandStatus>;
}

/** Starts `blksnap serve` on free loopback ports with `allowed` as the only prefix. */
export async function startServe(
  allowed: string,
  options: ServeOptions = {},
): Promise<RunningServe> {
  const stateDir = options.stateDir ?? join(allowed, "state");
  const serveArgs = [
    "run",
    "-A",
    MAIN,
    "serve",
    "--backend",
    "userspace",
    "--listen",
    "127.0.0.1:0",
    "--nbd-listen",
    "127.0.0.1:0",
    "--state-dir",
    stateDir,
    "--allow-path",
    allowed,
    ...(options.args ?? []),
  ];
  const [program, args] = options.nofile === undefined
    ? [Deno.execPath(), serveArgs]
    : ["prlimit", [
      `--nofile=${options.nofileSoft ?? options.nofile}:${options.nofile}`,
      Deno.execPath(),
      ...serveArgs,
    ]];
  const env: Record<string, string> = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
  for (const name of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  const child = new Deno.Command(program, {
    args,
    cwd: REPO,
    clearEnv: true,
    env: { ...env, ...options.env },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr: string[] = [];
  let ended = false;
  const status = child.status.then((s) => {
    ended = true;
    return s;
  });
  const lines = (async () => {
    let buffer = "";
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      buffer += text;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      stderr.push(...parts);
    }
  })();
  const deadline = Date.now() + 30_000;
  let http: RegExpExecArray | null = null;
  let nbd: RegExpExecArray | null = null;
  while (!(http && nbd)) {
    if (ended || Date.now() > deadline) {
      await lines;
      throw new Error(`serve did not start:\n${stderr.join("\n")}`);
    }
    for (const line of stderr) {
      http ??= /^HTTP API on http:\/\/[^ ]+:(\d+)\/v1/.exec(line);
      nbd ??= /^NBD exports on nbd:\/\/[^ ]+:(\d+)\//.exec(line);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    pid: child.pid,
    baseUrl: `http://127.0.0.1:${http[1]}`,
    nbdPort: Number(nbd[1]),
    stderr,
    status,
    alive: () => !ended,
    rssBytes: () => rssOf(child.pid),
    async [Symbol.asyncDispose]() {
      if (!ended) child.kill("SIGTERM");
      const timer = setTimeout(() => {
        if (!ended) child.kill("SIGKILL");
      }, 10_000);
      await status;
      clearTimeout(timer);
      await lines;
    },
  };
}

/** VmRSS of `pid` in bytes (0 when it is gone). */
export function rssOf(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
    return kib ? Number(kib) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Opens up to `count` TCP connections to 127.0.0.1:`port`, each given `timeoutMs`; returns those made. */
export async function flood(
  port: number,
  count: number,
  timeoutMs = 2000,
): Promise<{ conns: Deno.TcpConn[]; failed: number }> {
  const conns: Deno.TcpConn[] = [];
  let failed = 0;
  const batch = 100;
  for (let at = 0; at < count; at += batch) {
    const results = await Promise.all(
      Array.from({ length: Math.min(batch, count - at) }, () => connectWithin(port, timeoutMs)),
    );
    for (const conn of results) {
      if (conn) conns.push(conn);
      else failed += 1;
    }
  }
  return { conns, failed };
}

async function connectWithin(port: number, timeoutMs: number): Promise<Deno.TcpConn | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = Deno.connect({ hostname: "127.0.0.1", port });
  const late = new Promise<undefined>((resolve) =>
    timer = setTimeout(() => resolve(undefined), timeoutMs)
  );
  try {
    const conn = await Promise.race([attempt, late]);
    if (conn === undefined) attempt.then((c) => c.close(), () => {});
    return conn;
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Closes every connection, ignoring errors. */
export function closeAll(conns: Deno.Conn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // already closed by the peer
    }
  }
}

/** What one read on `conn` gives within `timeoutMs`: "eof", "data" or "open" (nothing yet). */
export async function probe(conn: Deno.Conn, timeoutMs: number): Promise<"eof" | "data" | "open"> {
  const buffer = new Uint8Array(4096);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const read = conn.read(buffer).then(
    (n): "eof" | "data" => n === null ? "eof" : "data",
    (): "eof" => "eof",
  );
  const late = new Promise<"open">((resolve) =>
    timer = setTimeout(() => resolve("open"), timeoutMs)
  );
  try {
    return await Promise.race([read, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Prints one figures line of the suite. */
export function figures(test: string, values: Record<string, number | string>): void {
  const text = Object.entries(values).map(([k, v]) => `${k}=${v}`).join(" ");
  console.log(`adversarial: ${test}: ${text}`);
}

/** Makes a temp folder (real path) with `allowed/` and `outside/`; removes it after `body`. */
export async function withRoot(
  body: (dirs: { root: string; allowed: string; outside: string }) => Promise<void>,
): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-adv-" }));
  const allowed = join(root, "allowed");
  const outside = join(root, "outside");
  await Deno.mkdir(allowed);
  await Deno.mkdir(outside);
  try {
    await body({ root, allowed, outside });
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}
