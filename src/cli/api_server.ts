/**
 * Where `serve` answers HTTP: a TCP address (plain, or TLS with a
 * certificate and key that SIGHUP reloads) or a Unix socket.
 *
 * Design note: Deno.serve fixes its certificate at start, and binding a
 * second TLS server beside it (SO_REUSEPORT) is an unstable API. So a reload
 * reads and checks the new files first (a file that does not read or is not
 * PEM is logged and the old certificate kept), then closes the listener (the
 * old server's connections and requests in flight finish on it), and binds
 * the same port again with the new certificate, retrying while the port is
 * still held: connections in that window of milliseconds are refused.
 *
 * The Unix socket is created with mode 0660: its owner and group may
 * connect, nobody else; file permissions are its access control (a token is
 * not required, as on loopback). A socket left by a process that died is
 * removed at start; one that answers is in use and refused.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import { readTlsFiles, type TlsFiles, type TlsMaterial } from "../api/tls.ts";
import type { Logger } from "../log/logger.ts";

/** Mode of the API's Unix socket. */
export const API_SOCKET_MODE = 0o660;

/** Where to listen. */
export type ApiAddress =
  | { transport: "tcp"; hostname: string; port: number; tls?: TlsFiles }
  | { transport: "unix"; path: string };

/** A running API server. */
export interface ApiServer {
  /** What clients use: `http(s)://host:port` or `unix:PATH`. */
  readonly url: string;
  /** Stops accepting, then resolves once requests in flight are done. */
  shutdown(): Promise<void>;
}

/** Removes a socket file no process listens on; CONFLICT when one answers. */
export async function clearStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch {
    return;
  }
  if (!info.isSocket) {
    throw new ServiceError("CONFLICT", `Cannot listen on ${path}: it exists and is not a socket`);
  }
  try {
    const connection = await Deno.connect({ transport: "unix", path });
    connection.close();
  } catch {
    await Deno.remove(path);
    return;
  }
  throw new ServiceError("CONFLICT", `Cannot listen on ${path}: another process listens there`);
}

function listenError(where: string, error: unknown): ServiceError {
  return new ServiceError(
    error instanceof Deno.errors.AddrInUse ? "CONFLICT" : "UNAVAILABLE",
    `Cannot listen on ${where}: ${(error as Error).message}`,
    { cause: error },
  );
}

async function serveUnix(
  path: string,
  handler: Deno.ServeHandler,
): Promise<ApiServer> {
  await clearStaleSocket(path);
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({ path, onListen: () => {} }, handler);
  } catch (error) {
    throw listenError(path, error);
  }
  await Deno.chmod(path, API_SOCKET_MODE);
  return {
    url: `unix:${path}`,
    async shutdown() {
      await server.shutdown();
      await Deno.remove(path).catch(() => {});
    },
  };
}

async function serveTcp(
  address: Extract<ApiAddress, { transport: "tcp" }>,
  handler: Deno.ServeHandler,
  logger: Logger,
): Promise<ApiServer> {
  const where = `${address.hostname}:${address.port}`;
  const start = async (port: number, tls: TlsMaterial | undefined) => {
    const bound = Promise.withResolvers<number>();
    const server = Deno.serve({
      hostname: address.hostname,
      port,
      ...(tls ?? {}),
      onListen: (addr) => bound.resolve(addr.port),
    }, handler);
    return { server, port: await bound.promise };
  };
  let current: { server: Deno.HttpServer; port: number };
  try {
    current = await start(address.port, address.tls && await readTlsFiles(address.tls));
  } catch (error) {
    if (error instanceof ServiceError) throw error;
    throw listenError(where, error);
  }
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  const rebind = async (tls: TlsMaterial) => {
    const old = current;
    const drained = old.server.shutdown();
    for (let attempt = 1;; attempt++) {
      try {
        current = await start(old.port, tls);
        break;
      } catch (error) {
        if (!(error instanceof Deno.errors.AddrInUse) || attempt >= 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    await drained;
  };
  let reloading = Promise.resolve();
  const reload = () => {
    reloading = reloading.then(async () => {
      let tls: TlsMaterial;
      try {
        tls = await readTlsFiles(address.tls!);
      } catch (error) {
        logger.error("TLS reload failed; the previous certificate stays in use", {
          event: "tls_reload",
          error: (error as Error).message,
        });
        return;
      }
      try {
        await rebind(tls);
        logger.info("TLS certificate reloaded", {
          event: "tls_reload",
          cert: address.tls!.certFile,
        });
      } catch (error) {
        logger.error("TLS reload could not listen again", {
          event: "tls_reload",
          error: (error as Error).message,
        });
      }
    });
  };
  if (address.tls) Deno.addSignalListener("SIGHUP", reload);
  return {
    url: `${address.tls ? "https" : "http"}://${host}:${current.port}`,
    async shutdown() {
      if (address.tls) Deno.removeSignalListener("SIGHUP", reload);
      await reloading;
      await current.server.shutdown();
    },
  };
}

/** Starts serving `handler` at `address`. CONFLICT when the address is taken. */
export function startApiServer(
  address: ApiAddress,
  handler: Deno.ServeHandler,
  options: { logger: Logger },
): Promise<ApiServer> {
  return address.transport === "unix"
    ? serveUnix(address.path, handler)
    : serveTcp(address, handler, options.logger);
}
