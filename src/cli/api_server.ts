/**
 * Where `serve` answers HTTP: a TCP address (plain, or TLS with a
 * certificate and key that SIGHUP reloads) or a Unix socket.
 *
 * Every listener is served by the HTTP listener of src/api/http_listener.ts
 * (its connection limits and timeouts apply to all three).
 *
 * Design note: a TLS listener fixes its certificate when it is made, and
 * binding a second one beside it (SO_REUSEPORT) is an unstable API. So a reload
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
import {
  type FetchHandler,
  type HttpListenerOptions,
  type HttpServer,
  serveHttp,
} from "../api/http_listener.ts";
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

/** What the servers share: the handler and the HTTP listener's limits and log. */
interface Serving {
  handler: FetchHandler;
  http: HttpListenerOptions;
  logger: Logger;
}

function serveOn(listener: Deno.Listener, serving: Serving): HttpServer {
  return serveHttp(listener, serving.handler, {
    ...serving.http,
    log: (message) => serving.logger.error(message),
  });
}

async function serveUnix(path: string, serving: Serving): Promise<ApiServer> {
  await clearStaleSocket(path);
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ transport: "unix", path });
  } catch (error) {
    throw listenError(path, error);
  }
  await Deno.chmod(path, API_SOCKET_MODE);
  const server = serveOn(listener, serving);
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
  serving: Serving,
): Promise<ApiServer> {
  const where = `${address.hostname}:${address.port}`;
  const { logger } = serving;
  const start = (port: number, tls: TlsMaterial | undefined) => {
    const options = { hostname: address.hostname, port };
    const listener = tls ? Deno.listenTls({ ...options, ...tls }) : Deno.listen(options);
    return { server: serveOn(listener, serving), port: (listener.addr as Deno.NetAddr).port };
  };
  let current: { server: HttpServer; port: number };
  const tls = address.tls && await readTlsFiles(address.tls);
  try {
    current = start(address.port, tls);
  } catch (error) {
    throw listenError(where, error);
  }
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  const rebind = async (material: TlsMaterial) => {
    const old = current;
    const drained = old.server.shutdown();
    for (let attempt = 1;; attempt++) {
      try {
        current = start(old.port, material);
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
      let material: TlsMaterial;
      try {
        material = await readTlsFiles(address.tls!);
      } catch (error) {
        logger.error("TLS reload failed; the previous certificate stays in use", {
          event: "tls_reload",
          error: (error as Error).message,
        });
        return;
      }
      try {
        await rebind(material);
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

/** Options of {@link startApiServer}. */
export interface ApiServerOptions {
  /** Where the listener's accept failures and reloads are logged. */
  logger: Logger;
  /** The HTTP listener's limits (connections, timeouts, sizes). */
  http?: HttpListenerOptions;
}

/** Starts serving `handler` at `address`. CONFLICT when the address is taken. */
export function startApiServer(
  address: ApiAddress,
  handler: FetchHandler,
  options: ApiServerOptions,
): Promise<ApiServer> {
  const serving = { handler, http: options.http ?? {}, logger: options.logger };
  return address.transport === "unix"
    ? serveUnix(address.path, serving)
    : serveTcp(address, serving);
}
