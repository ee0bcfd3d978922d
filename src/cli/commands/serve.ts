/**
 * `blksnap serve`: runs the service. Chooses the backend (auto: the kernel
 * module when its control device exists, else userspace), starts the HTTP
 * API (and, for the userspace backend, the NBD server), logs where it
 * listens, and shuts down cleanly on SIGINT/SIGTERM. Every option can also
 * come from a BLKSNAP_* environment variable; flags win.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { resolve } from "node:path";
import type { SnapshotDriver } from "../../driver.ts";
import type { KernelDriver } from "../../kernel/kernel_driver.ts";
import { createApp } from "../../api/app.ts";
import { type HttpServer, serveHttp } from "../../api/http_listener.ts";
import { PathPolicy } from "../../api/path_policy.ts";
import { ServiceError } from "../../errors.ts";
import { SERVICE_VERSION } from "../../version.ts";
import type { Command } from "../command.ts";
import type { CliIo } from "../context.ts";
import { UsageError } from "../exit_codes.ts";
import { raiseOpenFileLimit } from "../open_file_limit.ts";
import { limitFlags, LIMITS_HELP, type ServeLimits, serveLimits } from "./serve_limits.ts";

/** The kernel backend's host-wide lock (one kernel-backend service per host). */
const KERNEL_HOST_LOCK_PATH = "/run/blksnap-service/kernel-backend.lock";

const HELP = `Usage: blksnap serve [options]

Runs the service: the HTTP API, and NBD exports of devices and images for the
userspace backend.

  --listen HOST:PORT      HTTP API address (env BLKSNAP_LISTEN, default 127.0.0.1:8037);
                          anything but loopback requires a bearer token
  --backend KIND          auto | kernel | userspace (env BLKSNAP_BACKEND, default auto:
                          kernel when /dev/veeamblksnap or /dev/blksnap-control exists)
  --state-dir DIR         where state is kept (env BLKSNAP_STATE_DIR, default ./state)
  --allow-path PREFIX     device and storage paths must resolve under one of these
                          (repeatable; env BLKSNAP_ALLOW_PATH, ':'-separated;
                          default: the state directory)
  --token-file FILE       bearer token required from clients (env BLKSNAP_TOKEN_FILE,
                          or the token itself in BLKSNAP_TOKEN)
  --nbd-listen HOST:PORT  NBD server address, userspace backend (env BLKSNAP_NBD_LISTEN,
                          default 127.0.0.1:10809; "off" for none)
  --nbd-socket PATH       NBD server Unix socket, userspace backend (env BLKSNAP_NBD_SOCKET)
  --cbt-persistence on|off  keep each device's CBT across restarts and crashes, userspace
                          backend (env BLKSNAP_CBT_PERSISTENCE, default on)
  --destroy-snapshots-on-exit  destroy snapshots when the service stops instead of keeping
                          them for the next start (env BLKSNAP_DESTROY_SNAPSHOTS_ON_EXIT=1)
  --hooks-dir DIR         executables run before the freeze ("pre") and after the thaw
                          ("post") of every take, in name order (env BLKSNAP_HOOKS_DIR)
  --hook-timeout SECONDS  each hook is killed after this (env BLKSNAP_HOOK_TIMEOUT, default 30)
  --max-freeze SECONDS    file systems are thawed after this even if the take is still
                          running (env BLKSNAP_MAX_FREEZE, default 10)
  -h, --help              show this help
${LIMITS_HELP}`;

/** The serve settings after flags and environment are merged. */
export interface ServeSettings {
  /** HTTP listen address. */
  listen: { hostname: string; port: number };
  /** Requested backend. */
  backend: "auto" | "kernel" | "userspace";
  /** Absolute state directory. */
  stateDir: string;
  /** Allowed path prefixes (absolute). */
  allowPaths: string[];
  /** Bearer token, if any. */
  token?: string;
  /** NBD TCP address, or undefined for none. */
  nbdListen?: { hostname: string; port: number };
  /** NBD Unix socket path. */
  nbdSocket?: string;
  /** Keep CBT records across restarts (userspace backend). */
  cbtPersistence: boolean;
  /** Destroy snapshots at stop. */
  destroySnapshotsOnExit: boolean;
  /** Folder of take hooks. */
  hooksDir?: string;
  /** Milliseconds each hook may run. */
  hookTimeoutMs: number;
  /** Milliseconds file systems may stay frozen. */
  maxFreezeMs: number;
  /** Connection and request limits. */
  limits: ServeLimits;
}

function secondsSetting(text: string, what: string): number {
  const seconds = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !(seconds > 0) || seconds > 3600) {
    throw new UsageError(`${what} must be a number of seconds from 0 to 3600, got "${text}"`);
  }
  return Math.round(seconds * 1000);
}

/** Parses "HOST:PORT" ("[::1]:8037" for IPv6); `what` names the option in errors. */
export function parseHostPort(text: string, what: string): { hostname: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new UsageError(`${what} must be HOST:PORT, got "${text}"`);
  return { hostname: match[1] ?? match[2], port };
}

/** True for loopback host names and addresses. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

async function readTokenFile(path: string): Promise<string> {
  try {
    const token = (await Deno.readTextFile(path)).trim();
    if (!token) throw new UsageError(`The token file ${path} is empty`);
    return token;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`Cannot read the token file ${path}: ${(error as Error).message}`);
  }
}

/** BLKSNAP_TOKEN trimmed (a trailing newline is no part of it); UsageError when set but empty. */
function tokenFromEnv(io: CliIo): string | undefined {
  const text = io.env("BLKSNAP_TOKEN");
  if (text === undefined) return undefined;
  const token = text.trim();
  if (!token) throw new UsageError("BLKSNAP_TOKEN is set but empty: give a token or unset it");
  return token;
}

/** Merges flags `args` with the environment into settings. */
export async function serveSettings(args: string[], io: CliIo): Promise<ServeSettings | "help"> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        listen: { type: "string" },
        backend: { type: "string" },
        "state-dir": { type: "string" },
        "allow-path": { type: "string", multiple: true },
        "token-file": { type: "string" },
        "nbd-listen": { type: "string" },
        "nbd-socket": { type: "string" },
        "cbt-persistence": { type: "string" },
        "destroy-snapshots-on-exit": { type: "boolean" },
        "hooks-dir": { type: "string" },
        "hook-timeout": { type: "string" },
        "max-freeze": { type: "string" },
        ...limitFlags,
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return "help";
  const listen = parseHostPort(
    values.listen ?? io.env("BLKSNAP_LISTEN") ?? "127.0.0.1:8037",
    "--listen",
  );
  const backend = values.backend ?? io.env("BLKSNAP_BACKEND") ?? "auto";
  if (backend !== "auto" && backend !== "kernel" && backend !== "userspace") {
    throw new UsageError(`--backend must be auto, kernel or userspace, got "${backend}"`);
  }
  const stateDir = resolve(values["state-dir"] ?? io.env("BLKSNAP_STATE_DIR") ?? "state");
  const allowFromEnv = io.env("BLKSNAP_ALLOW_PATH")?.split(":").filter(Boolean);
  const allowPaths = (values["allow-path"] ?? allowFromEnv ?? [stateDir]).map((p) => resolve(p));
  const tokenFile = values["token-file"] ?? io.env("BLKSNAP_TOKEN_FILE");
  const token = tokenFile ? await readTokenFile(tokenFile) : tokenFromEnv(io);
  if (!isLoopback(listen.hostname) && !token) {
    throw new UsageError(
      `Listening on ${listen.hostname} (not loopback) requires a bearer token: ` +
        "give --token-file FILE or set BLKSNAP_TOKEN",
    );
  }
  const nbdText = values["nbd-listen"] ?? io.env("BLKSNAP_NBD_LISTEN") ?? "127.0.0.1:10809";
  const nbdListen = nbdText === "off" ? undefined : parseHostPort(nbdText, "--nbd-listen");
  const nbdSocket = values["nbd-socket"] ?? io.env("BLKSNAP_NBD_SOCKET");
  if (!nbdListen && !nbdSocket && backend === "userspace") {
    throw new UsageError("The userspace backend needs --nbd-listen or --nbd-socket");
  }
  const persistence = values["cbt-persistence"] ?? io.env("BLKSNAP_CBT_PERSISTENCE") ?? "on";
  if (persistence !== "on" && persistence !== "off") {
    throw new UsageError(`--cbt-persistence must be on or off, got "${persistence}"`);
  }
  const destroyFromEnv = io.env("BLKSNAP_DESTROY_SNAPSHOTS_ON_EXIT");
  const destroySnapshotsOnExit = values["destroy-snapshots-on-exit"] ??
    (destroyFromEnv !== undefined && !["", "0", "false", "no"].includes(destroyFromEnv));
  const hooksText = values["hooks-dir"] ?? io.env("BLKSNAP_HOOKS_DIR");
  const hooksDir = hooksText ? resolve(hooksText) : undefined;
  const hookTimeoutMs = secondsSetting(
    values["hook-timeout"] ?? io.env("BLKSNAP_HOOK_TIMEOUT") ?? "30",
    "--hook-timeout",
  );
  const maxFreezeMs = secondsSetting(
    values["max-freeze"] ?? io.env("BLKSNAP_MAX_FREEZE") ?? "10",
    "--max-freeze",
  );
  const limits = serveLimits(values, io);
  return {
    listen,
    backend,
    stateDir,
    allowPaths,
    token,
    nbdListen,
    nbdSocket,
    cbtPersistence: persistence === "on",
    destroySnapshotsOnExit,
    hooksDir,
    hookTimeoutMs,
    maxFreezeMs,
    limits,
  };
}

/**
 * Serves the kernel backend's images over NBD (`<device>@<snapshot-id>`, as
 * the userspace backend does) when an NBD listener is configured; returns
 * what stops it.
 */
async function serveKernelImages(
  driver: KernelDriver,
  settings: ServeSettings,
  io: CliIo,
): Promise<() => Promise<void>> {
  if (!settings.nbdListen && !settings.nbdSocket) return () => Promise.resolve();
  const { KernelImageExports } = await import("../../kernel/image_exports.ts");
  const { startNbdServer } = await import("../../nbd/server.ts");
  const exports = new KernelImageExports(driver);
  let server;
  try {
    server = await startNbdServer(exports, {
      ...(settings.nbdListen ? { tcp: settings.nbdListen } : {}),
      ...(settings.nbdSocket ? { unixPath: settings.nbdSocket } : {}),
      maxConnections: settings.limits.nbdMaxConnections,
    });
  } catch (error) {
    await driver.close();
    throw error;
  }
  if (server.tcpPort !== undefined) {
    io.err(
      `NBD image exports on nbd://${
        settings.nbdListen!.hostname
      }:${server.tcpPort}/<device>@<snapshot>\n`,
    );
  }
  if (server.unixPath) {
    io.err(`NBD image exports on nbd+unix:///<device>@<snapshot>?socket=${server.unixPath}\n`);
  }
  return async () => {
    await server.close();
    await exports.close();
  };
}

/** The backend, and what stops the servers started beside it. */
interface OpenedDriver {
  driver: SnapshotDriver;
  stop: () => Promise<void>;
}

async function openDriver(
  settings: ServeSettings,
  io: CliIo,
  paths: PathPolicy,
): Promise<OpenedDriver> {
  const log = (level: string, message: string) => {
    if (level !== "debug") io.err(`${message}\n`);
  };
  let backend = settings.backend;
  if (backend === "auto") {
    const { probeProfile } = await import("../../kernel/profiles.ts");
    const profile = await probeProfile();
    backend = profile ? "kernel" : "userspace";
    io.err(
      profile
        ? `backend: kernel (auto: found the ${profile} module's control device)\n`
        : "backend: userspace (auto: no /dev/veeamblksnap or /dev/blksnap-control)\n",
    );
  } else {
    io.err(`backend: ${backend} (--backend)\n`);
  }
  if (backend === "kernel") {
    const { createKernelDriver } = await import("../../kernel/kernel_driver.ts");
    const driver = await createKernelDriver({
      stateDir: settings.stateDir,
      hostLockPath: io.env("BLKSNAP_KERNEL_LOCK") ?? KERNEL_HOST_LOCK_PATH,
      destroySnapshotsOnClose: settings.destroySnapshotsOnExit,
      checkPath: (path) =>
        paths.resolve(path, { field: "path", purpose: "re-attach", mustExist: true }),
    });
    return { driver, stop: await serveKernelImages(driver, settings, io) };
  }
  const { UserspaceDriver } = await import("../../userspace/userspace_driver.ts");
  const driver = await UserspaceDriver.start({
    stateDir: settings.stateDir,
    nbd: {
      ...(settings.nbdListen ? { tcp: settings.nbdListen } : {}),
      ...(settings.nbdSocket ? { unixPath: settings.nbdSocket } : {}),
      maxConnections: settings.limits.nbdMaxConnections,
    },
    logger: log,
    cbtPersistence: settings.cbtPersistence,
    destroySnapshotsOnClose: settings.destroySnapshotsOnExit,
    checkPath: async (path) => {
      const check = { field: "path", purpose: "re-attach" };
      await paths.resolve(path, { ...check, mustExist: true });
      return paths.verifier(path, check);
    },
  });
  const server = driver.nbdServer;
  if (server.tcpPort !== undefined) {
    io.err(`NBD exports on nbd://${settings.nbdListen!.hostname}:${server.tcpPort}/<device>\n`);
    if (!isLoopback(settings.nbdListen!.hostname)) {
      io.err(
        "warning: NBD has no authentication; anyone who reaches this address can read and write devices\n",
      );
    }
  }
  if (server.unixPath) io.err(`NBD exports on nbd+unix:///<device>?socket=${server.unixPath}\n`);
  return { driver, stop: () => Promise.resolve() };
}

/** Wraps `driver` so that takes freeze file systems and run the hooks of --hooks-dir. */
async function consistentTakes(
  driver: SnapshotDriver,
  settings: ServeSettings,
  io: CliIo,
): Promise<SnapshotDriver> {
  const { ConsistentDriver } = await import("../../consistency/consistent_driver.ts");
  const { ioctlFreezer } = await import("../../consistency/fs_freezer.ts");
  const { Hooks } = await import("../../consistency/hooks.ts");
  const log = (line: string) => io.err(`${line}\n`);
  try {
    const hooks = settings.hooksDir
      ? await Hooks.fromDirectory(settings.hooksDir, { timeoutMs: settings.hookTimeoutMs, log })
      : undefined;
    if (hooks) {
      io.err(`take hooks from ${settings.hooksDir}: ${hooks.names.join(", ") || "none"}\n`);
    }
    return new ConsistentDriver(driver, {
      freezer: ioctlFreezer(),
      hooks,
      maxFreezeMs: settings.maxFreezeMs,
      log,
    });
  } catch (error) {
    await driver.close();
    throw error;
  }
}

/** Runs the service until SIGINT or SIGTERM. */
async function serve(settings: ServeSettings, io: CliIo): Promise<number> {
  await Deno.mkdir(settings.stateDir, { recursive: true });
  const files = raiseOpenFileLimit();
  io.err(`open-file limit: ${files.soft} (hard ${files.hard})\n`);
  const paths = await PathPolicy.create(settings.allowPaths);
  io.err(`blksnap service ${SERVICE_VERSION}, state in ${settings.stateDir}\n`);
  const opened = await openDriver(settings, io, paths);
  const driver = await consistentTakes(opened.driver, settings, io).catch(async (error) => {
    await opened.stop();
    throw error;
  });
  const app = createApp(driver, { paths, token: settings.token });
  const stopped = Promise.withResolvers<void>();
  let server: HttpServer;
  try {
    const { hostname, port } = settings.listen;
    server = serveHttp(Deno.listen({ hostname, port }), app.fetch, {
      ...settings.limits.http,
      log: (message) => io.err(`${message}\n`),
    });
    const addr = server.addr as Deno.NetAddr;
    const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    io.err(
      `HTTP API on http://${host}:${addr.port}/v1 (bearer token ${
        settings.token ? "required" : "not required"
      })\n`,
    );
    io.err(`allowed paths: ${paths.prefixes.join(", ")}\n`);
  } catch (error) {
    await opened.stop();
    await driver.close();
    const { hostname, port } = settings.listen;
    throw new ServiceError(
      error instanceof Deno.errors.AddrInUse ? "CONFLICT" : "UNAVAILABLE",
      `Cannot listen on ${hostname}:${port}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const stop = () => stopped.resolve();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await stopped.promise;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  io.err("shutting down\n");
  // Stop accepting first, then close the driver: that ends event streams and
  // long polls, which the server's graceful shutdown would otherwise wait for.
  const drained = server.shutdown();
  await opened.stop();
  await driver.close();
  await drained;
  return 0;
}

/** The serve command. */
export const command: Command = {
  help: HELP,
  async run(args, io) {
    const settings = await serveSettings(args, io);
    if (settings === "help") {
      io.out(HELP);
      return 0;
    }
    return await serve(settings, io);
  },
};
