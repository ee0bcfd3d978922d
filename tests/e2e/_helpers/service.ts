/**
 * The service in the lab guest, for the cases that drive it over HTTP: started from the bundle
 * installed in the image (`deno run -A /opt/blksnap/blksnap.js serve ...`), its output appended
 * to $LAB_OUT/service.log (which the lab brings back), stopped when the case ends.
 *
 * @example
 * ```ts ignore
 * labTest({
 *   name: "attach a disk through the API",
 *   requires: ["service"],
 *   async fn() {
 *     await using service = await startService({ backend: "userspace" });
 *     const response = await fetch(`${service.url}/v1/version`);
 *     // ...
 *   },
 * });
 * ```
 *
 * @module
 */

import { labEnv } from "./guest.ts";

/** Options of {@link startService}. */
export interface ServiceOptions {
  /** --backend (default auto). */
  backend?: "auto" | "kernel" | "userspace";
  /** Loopback port of the HTTP API (default 8037). */
  port?: number;
  /** --allow-path prefixes (default /dev, /var/tmp, /tmp). */
  allowPaths?: readonly string[];
  /** Further arguments for `serve`. */
  args?: readonly string[];
  /** How long the service may take to answer /v1/version (default 120 s: TCG is slow). */
  startTimeoutMs?: number;
  /** Use this state folder (kept at stop, for a restart) instead of a new temp one (removed). */
  stateDir?: string;
}

/** A running service; dispose it (or call stop) to end it. */
export interface RunningService extends AsyncDisposable {
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:8037. */
  readonly url: string;
  /** The service's state folder. */
  readonly stateDir: string;
  /** Stops the service (SIGTERM) and waits for it. */
  stop(): Promise<void>;
}

/**
 * Starts the service and waits until GET /v1/version answers.
 *
 * @throws {Error} when the image has no service bundle, or the service exits or stays silent
 * (see service.log).
 */
export async function startService(options: ServiceOptions = {}): Promise<RunningService> {
  const lab = labEnv();
  if (lab.serviceBundle === undefined) throw new Error("The lab image has no service bundle");
  const port = options.port ?? 8037;
  const url = `http://127.0.0.1:${port}`;
  const stateDir = options.stateDir ?? await Deno.makeTempDir({ prefix: "blksnap-service-" });
  const logPath = `${lab.outDir ?? stateDir}/service.log`;
  const args = [
    "run",
    "--allow-all",
    "--unstable-no-legacy-abort",
    lab.serviceBundle,
    "serve",
    "--listen",
    `127.0.0.1:${port}`,
    "--backend",
    options.backend ?? "auto",
    "--state-dir",
    stateDir,
    ...(options.allowPaths ?? ["/dev", "/var/tmp", "/tmp"]).flatMap((p) => ["--allow-path", p]),
    ...(options.args ?? []),
  ];
  await Deno.writeTextFile(logPath, `=== ${new Date().toISOString()} deno ${args.join(" ")}\n`, {
    append: true,
  });
  const child = new Deno.Command("deno", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // One appending handle per stream: a writable stream takes one pipe at a time.
  const copied = Promise.all([child.stdout, child.stderr].map(async (stream) => {
    const log = await Deno.open(logPath, { append: true });
    await stream.pipeTo(log.writable);
  }));
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stop = async () => {
    if (!exited) child.kill("SIGTERM");
    await status;
    await copied;
    if (options.stateDir === undefined) {
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
  };
  const deadline = Date.now() + (options.startTimeoutMs ?? 120_000);
  while (true) {
    try {
      const response = await fetch(`${url}/v1/version`);
      await response.body?.cancel();
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(
        `The service ${exited ? "exited" : "did not answer"} before /v1/version (see ${logPath})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return { url, stateDir, stop, [Symbol.asyncDispose]: stop };
}
