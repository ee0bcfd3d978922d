/**
 * `blksnapctl serve`: runs the service. Chooses the backend (auto: the kernel
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
import { PathPolicy } from "../../api/path_policy.ts";
import { Metrics } from "../../api/metrics.ts";
import type { NbdStats } from "../../nbd/stats.ts";
import { SERVICE_VERSION } from "../../version.ts";
import { Logger } from "../../log/logger.ts";
import { logAdoption, withStateLog } from "../../log/logged_driver.ts";
import { clearStaleSocket, startApiServer } from "../api_server.ts";
import {
  OPERATOR_FLAGS_HELP,
  operatorFlags,
  type OperatorSettings,
  operatorSettings,
} from "../serve_operator.ts";
import type { Command } from "../command.ts";
import type { CliIo } from "../context.ts";
import { UsageError } from "../exit_codes.ts";
import { PROGRAM } from "../program.ts";
import { raiseOpenFileLimit } from "../open_file_limit.ts";
import { limitFlags, LIMITS_HELP, type ServeLimits, serveLimits } from "./serve_limits.ts";
import { NBD_WORKERS_HELP, nbdWorkers, nbdWorkersDefault } from "./nbd_workers_flag.ts";

/** The kernel backend's host-wide lock (one kernel-backend service per host). */
const KERNEL_HOST_LOCK_PATH = "/run/blksnap-service/kernel-backend.lock";

const HELP = `Usage: ${PROGRAM} serve [options]

Runs the service: the HTTP API, and NBD exports of images (and, for the
userspace backend, of the tracked devices).

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
  --nbd-listen HOST:PORT  NBD server address (env BLKSNAP_NBD_LISTEN, default 127.0.0.1:10809;
                          "off" for no TCP listener: the userspace backend then serves NBD
                          on --nbd-socket, default STATE_DIR/nbd.sock; the kernel backend
                          serves its images over NBD only on the listeners given, and
                          without any their locators are /dev paths)
  --nbd-socket PATH       NBD server Unix socket (env BLKSNAP_NBD_SOCKET)
${NBD_WORKERS_HELP}  --cbt-persistence on|off  keep each device's CBT across restarts and crashes, userspace
                          backend (env BLKSNAP_CBT_PERSISTENCE, default on)
  --destroy-snapshots-on-exit  destroy snapshots when the service stops instead of keeping
                          them for the next start (env BLKSNAP_DESTROY_SNAPSHOTS_ON_EXIT=1)
  --hooks-dir DIR         executables run before the freeze ("pre") and after the thaw
                          ("post") of every take, in name order (env BLKSNAP_HOOKS_DIR)
  --hook-timeout SECONDS  each hook is killed after this (env BLKSNAP_HOOK_TIMEOUT, default 30)
  --max-freeze SECONDS    file systems are thawed after this even if the take is still
                          running (env BLKSNAP_MAX_FREEZE, default 10)
${OPERATOR_FLAGS_HELP}  -h, --help              show this help
${LIMITS_HELP}`;

/** The serve settings after flags and environment are merged. */
export interface ServeSettings extends OperatorSettings {
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
  /** NBD Unix socket path given (the userspace backend defaults it without a TCP listener). */
  nbdSocket?: string;
  /** Blocking NBD Workers (0: the main thread serves NBD); undefined: the backend's default. */
  nbdWorkers?: number;
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
        "nbd-workers": { type: "string" },
        ...operatorFlags,
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
  const listenText = values.listen ?? io.env("BLKSNAP_LISTEN") ?? "127.0.0.1:8037";
  const operator = operatorSettings(values, listenText, io);
  const listen = operator.listenUnix
    ? { hostname: "127.0.0.1", port: 0 }
    : parseHostPort(listenText, "--listen");
  const backend = values.backend ?? io.env("BLKSNAP_BACKEND") ?? "auto";
  if (backend !== "auto" && backend !== "kernel" && backend !== "userspace") {
    throw new UsageError(`--backend must be auto, kernel or userspace, got "${backend}"`);
  }
  const stateDir = resolve(values["state-dir"] ?? io.env("BLKSNAP_STATE_DIR") ?? "state");
  const allowFromEnv = io.env("BLKSNAP_ALLOW_PATH")?.split(":").filter(Boolean);
  const allowPaths = (values["allow-path"] ?? allowFromEnv ?? [stateDir]).map((p) => resolve(p));
  const tokenFile = values["token-file"] ?? io.env("BLKSNAP_TOKEN_FILE");
  const token = tokenFile ? await readTokenFile(tokenFile) : tokenFromEnv(io);
  if (!operator.listenUnix && !isLoopback(listen.hostname) && !token) {
    throw new UsageError(
      `Listening on ${listen.hostname} (not loopback) requires a bearer token: ` +
        "give --token-file FILE or set BLKSNAP_TOKEN",
    );
  }
  const nbdText = values["nbd-listen"] ?? io.env("BLKSNAP_NBD_LISTEN") ?? "127.0.0.1:10809";
  const nbdListen = nbdText === "off" ? undefined : parseHostPort(nbdText, "--nbd-listen");
  const nbdSocket = values["nbd-socket"] ?? io.env("BLKSNAP_NBD_SOCKET");
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
  const workersText = values["nbd-workers"] ?? io.env("BLKSNAP_NBD_WORKERS");
  return {
    ...operator,
    listen,
    backend,
    stateDir,
    allowPaths,
    token,
    nbdListen,
    nbdSocket,
    nbdWorkers: workersText === undefined ? undefined : nbdWorkers(workersText),
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
  logger: Logger,
): Promise<() => Promise<void>> {
  if (!settings.nbdListen && !settings.nbdSocket) return () => Promise.resolve();
  if (settings.nbdSocket) await clearStaleSocket(settings.nbdSocket);
  const { KernelImageExports } = await import("../../kernel/image_exports.ts");
  const { startNbdServer } = await import("../../nbd/server.ts");
  const exports = new KernelImageExports(driver);
  let server;
  try {
    server = await startNbdServer(exports, {
      ...(settings.nbdListen ? { tcp: settings.nbdListen } : {}),
      ...(settings.nbdSocket ? { unixPath: settings.nbdSocket } : {}),
      maxConnections: settings.limits.nbdMaxConnections,
      workers: settings.nbdWorkers ?? nbdWorkersDefault("kernel"),
    });
  } catch (error) {
    await driver.close();
    throw error;
  }
  const host = settings.nbdListen?.hostname;
  driver.serveImagesAt(
    server.tcpPort !== undefined
      ? (name) => `nbd://${host}:${server.tcpPort}/${name}`
      : (name) => `nbd+unix:///${name}?socket=${server.unixPath}`,
  );
  if (server.tcpPort !== undefined) {
    logger.info(
      `NBD image exports on nbd://${
        settings.nbdListen!.hostname
      }:${server.tcpPort}/<device>@<snapshot>`,
    );
  }
  if (server.unixPath) {
    logger.info(`NBD image exports on nbd+unix:///<device>@<snapshot>?socket=${server.unixPath}`);
  }
  return async () => {
    driver.serveImagesAt(undefined);
    await server.close();
    await exports.close();
  };
}

/** The backend, what stops the servers started beside it, and its NBD counters. */
interface OpenedDriver {
  driver: SnapshotDriver;
  stop: () => Promise<void>;
  nbdStats?: NbdStats;
}

async function openDriver(
  settings: ServeSettings,
  { logger, paths, io }: { logger: Logger; paths: PathPolicy; io: CliIo },
): Promise<OpenedDriver> {
  const log = (level: "debug" | "info" | "warn" | "error", message: string) =>
    logger.log(level, message);
  let backend = settings.backend;
  if (backend === "auto") {
    const { probeProfile } = await import("../../kernel/profiles.ts");
    const profile = await probeProfile();
    backend = profile ? "kernel" : "userspace";
    logger.info(
      profile
        ? `backend: kernel (auto: found the ${profile} module's control device)`
        : "backend: userspace (auto: no /dev/veeamblksnap or /dev/blksnap-control)",
      { backend },
    );
  } else {
    logger.info(`backend: ${backend} (--backend)`, { backend });
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
    return { driver, stop: await serveKernelImages(driver, settings, logger) };
  }
  const { UserspaceDriver } = await import("../../userspace/userspace_driver.ts");
  const nbdSocket = settings.nbdSocket ??
    (settings.nbdListen ? undefined : resolve(settings.stateDir, "nbd.sock"));
  if (nbdSocket) await clearStaleSocket(nbdSocket);
  const driver = await UserspaceDriver.start({
    stateDir: settings.stateDir,
    nbd: {
      ...(settings.nbdListen ? { tcp: settings.nbdListen } : {}),
      ...(nbdSocket ? { unixPath: nbdSocket } : {}),
      maxConnections: settings.limits.nbdMaxConnections,
      workers: settings.nbdWorkers ?? nbdWorkersDefault("userspace"),
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
    logger.info(`NBD exports on nbd://${settings.nbdListen!.hostname}:${server.tcpPort}/<device>`);
    if (!isLoopback(settings.nbdListen!.hostname)) {
      logger.warn(
        "NBD has no authentication; anyone who reaches this address can read and write devices",
      );
    }
  }
  if (server.unixPath) logger.info(`NBD exports on nbd+unix:///<device>?socket=${server.unixPath}`);
  return { driver, stop: () => Promise.resolve(), nbdStats: server.stats };
}

/** Wraps `driver` so that takes freeze file systems and run the hooks of --hooks-dir. */
async function consistentTakes(
  driver: SnapshotDriver,
  settings: ServeSettings,
  logger: Logger,
): Promise<SnapshotDriver> {
  const { ConsistentDriver } = await import("../../consistency/consistent_driver.ts");
  const { ioctlFreezer } = await import("../../consistency/fs_freezer.ts");
  const { Hooks } = await import("../../consistency/hooks.ts");
  const { ReadProbeBoard } = await import("../../nbd/read_probes.ts");
  const log = (line: string) => logger.info(line);
  try {
    const hooks = settings.hooksDir
      ? await Hooks.fromDirectory(settings.hooksDir, { timeoutMs: settings.hookTimeoutMs, log })
      : undefined;
    if (hooks) {
      logger.info(`take hooks from ${settings.hooksDir}: ${hooks.names.join(", ") || "none"}`);
    }
    return new ConsistentDriver(driver, {
      freezer: ioctlFreezer(),
      hooks,
      maxFreezeMs: settings.maxFreezeMs,
      log,
      ...("readProbes" in driver && driver.readProbes instanceof ReadProbeBoard
        ? { readProbe: { board: driver.readProbes } }
        : {}),
    });
  } catch (error) {
    await driver.close();
    throw error;
  }
}

/** Runs the service until SIGINT or SIGTERM. */
async function serve(settings: ServeSettings, io: CliIo): Promise<number> {
  const logger = new Logger({
    level: settings.log.level,
    format: settings.log.format,
    write: (line) => io.err(line),
  });
  await Deno.mkdir(settings.stateDir, { recursive: true });
  const files = raiseOpenFileLimit();
  logger.info(`open-file limit: ${files.soft} (hard ${files.hard})`, {
    softLimit: files.soft,
    hardLimit: files.hard,
  });
  const paths = await PathPolicy.create(settings.allowPaths);
  logger.info(`${PROGRAM} service ${SERVICE_VERSION}, state in ${settings.stateDir}`, {
    version: SERVICE_VERSION,
  });
  const opened = await openDriver(settings, { logger, paths, io });
  const consistent = await consistentTakes(opened.driver, settings, logger).catch(
    async (error) => {
      await opened.stop();
      throw error;
    },
  );
  const driver = withStateLog(consistent, logger);
  await logAdoption(driver, logger);
  const metrics = new Metrics({ nbdStats: opened.nbdStats });
  const app = createApp(driver, { paths, token: settings.token, logger, metrics });
  const stopped = Promise.withResolvers<void>();
  let server;
  try {
    server = await startApiServer(
      settings.listenUnix
        ? { transport: "unix", path: settings.listenUnix }
        : { transport: "tcp", ...settings.listen, tls: settings.tls },
      app.fetch,
      { logger, http: settings.limits.http },
    );
  } catch (error) {
    await opened.stop();
    await driver.close();
    throw error;
  }
  const api = server.url.startsWith("unix:")
    ? `${server.url} (http://localhost/v1 over the socket)`
    : `${server.url}/v1`;
  logger.info(`HTTP API on ${api} (bearer token ${settings.token ? "required" : "not required"})`);
  logger.info(`allowed paths: ${paths.prefixes.join(", ")}`);
  const stop = () => stopped.resolve();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await stopped.promise;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  logger.info("shutting down");
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
