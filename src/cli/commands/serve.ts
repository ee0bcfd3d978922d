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

const HELP = `Usage: ${PROGRAM} serve [options]

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
                          default 127.0.0.1:10809; "off" for no TCP listener: the userspace
                          backend then serves NBD on --nbd-socket, default STATE_DIR/nbd.sock)
  --nbd-socket PATH       NBD server Unix socket, userspace backend (env BLKSNAP_NBD_SOCKET)
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
  /** NBD Unix socket path. */
  nbdSocket?: string;
  /** Connection and request limits. */
  limits: ServeLimits;
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
        ...operatorFlags,
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
  const nbdSocket = values["nbd-socket"] ?? io.env("BLKSNAP_NBD_SOCKET") ??
    (nbdListen ? undefined : resolve(stateDir, "nbd.sock"));
  const limits = serveLimits(values, io);
  return {
    ...operator,
    listen,
    backend,
    stateDir,
    allowPaths,
    token,
    nbdListen,
    nbdSocket,
    limits,
  };
}

async function openDriver(
  settings: ServeSettings,
  logger: Logger,
): Promise<{ driver: SnapshotDriver; nbdStats?: NbdStats }> {
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
    return { driver: await createKernelDriver({ stateDir: settings.stateDir }) };
  }
  const { UserspaceDriver } = await import("../../userspace/userspace_driver.ts");
  if (settings.nbdSocket) await clearStaleSocket(settings.nbdSocket);
  const driver = await UserspaceDriver.start({
    stateDir: settings.stateDir,
    nbd: {
      ...(settings.nbdListen ? { tcp: settings.nbdListen } : {}),
      ...(settings.nbdSocket ? { unixPath: settings.nbdSocket } : {}),
      maxConnections: settings.limits.nbdMaxConnections,
    },
    logger: log,
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
  return { driver, nbdStats: server.stats };
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
  const opened = await openDriver(settings, logger);
  const driver = withStateLog(opened.driver, logger);
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
