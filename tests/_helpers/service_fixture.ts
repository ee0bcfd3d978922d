/**
 * A real service for API, client and CLI tests: createApp over a
 * UserspaceDriver (its NBD server on a free loopback port) served by
 * the service's own HTTP listener (src/api/http_listener.ts) on 127.0.0.1 port 0, temp folders for the allowed prefix, the
 * state and things outside the prefix, and a typed ky client pointed at it.
 * Everything is closed and removed when the body ends, so the test
 * sanitizers stay on.
 *
 * @module
 */

import { join } from "node:path";
import { createApp } from "../../src/api/app.ts";
import { type HttpServer, serveHttp } from "../../src/api/http_listener.ts";
import { Metrics } from "../../src/api/metrics.ts";
import { PathPolicy } from "../../src/api/path_policy.ts";
import { type BlksnapClient, type ClientOptions, createClient } from "../../src/client/client.ts";
import type { SnapshotDriver } from "../../src/driver.ts";
import type { EngineParams } from "../../src/engine/params.ts";
import { UserspaceDriver } from "../../src/userspace/userspace_driver.ts";
import { pattern } from "./nbd_fixture.ts";

/**
 * Small engine parameters for API tests: 64 KiB tracking blocks and chunks
 * (so a 1 MiB disk has 16 of each), chunks stored as soon as they are
 * copied (no store queue to fill first), and a 256 KiB storage growth step,
 * so a storage limited to a few chunks overflows after a few writes.
 */
export const API_ENGINE_PARAMS: Partial<EngineParams> = {
  trackingBlockMinimumShift: 16,
  chunkMinimumShift: 16,
  chunkMaximumInQueue: 0,
  diffStorageMinimumSectors: 512,
};

/** Tracking block and chunk size under {@link API_ENGINE_PARAMS}. */
export const API_BLOCK_BYTES = 65536;

/** Options of {@link withService}. */
export interface ServiceFixtureOptions {
  /** Bearer token the service requires (none by default). */
  token?: string;
  /** Engine parameters (default {@link API_ENGINE_PARAMS}). */
  engineParams?: Partial<EngineParams>;
  /** Request body limit in bytes (the app's default when omitted). */
  bodyLimitBytes?: number;
  /** Options of the fixture's client beyond baseUrl (the token is passed by default). */
  client?: Partial<ClientOptions>;
  /** Wraps the driver before the app gets it (e.g. in a ConsistentDriver). */
  wrapDriver?: (driver: UserspaceDriver) => SnapshotDriver;
}

/** A running service and where to reach it. */
export interface ServiceFixture {
  /** http://127.0.0.1:PORT (no trailing slash). */
  baseUrl: string;
  /** Typed client for the service. */
  client: BlksnapClient;
  /** The driver behind the app. */
  driver: UserspaceDriver;
  /** The app's metrics registry. */
  metrics: Metrics;
  /** The temp folder holding everything below. */
  root: string;
  /** The one allowed path prefix (a real path). */
  allowed: string;
  /** A folder outside the allowed prefix. */
  outside: string;
  /** The driver's state folder. */
  stateDir: string;
  /** Creates a file of `sizeBytes` filled with pattern(`seed`) under `allowed`; returns its path. */
  makeDisk(name: string, sizeBytes: number, seed?: number): Promise<string>;
  /** A raw fetch of `path` (e.g. "/v1/devices") on the service, the body read by the caller. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
}

/** Creates a file at `path` of `sizeBytes` holding pattern(`seed`, default 1); returns the content. */
export async function writeDisk(
  path: string,
  sizeBytes: number,
  { seed = 1 }: { seed?: number } = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const content = pattern(sizeBytes, seed);
  await Deno.writeFile(path, content);
  return content;
}

/**
 * Starts the service, runs `body` with it, then closes the driver (which
 * destroys snapshots, ending event streams), shuts the HTTP server down and
 * removes the temp folders, whatever `body` did.
 */
export async function withService(
  options: ServiceFixtureOptions,
  body: (fixture: ServiceFixture) => Promise<void>,
): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-api-" }));
  const allowed = join(root, "allowed");
  const outside = join(root, "outside");
  const stateDir = join(root, "state");
  await Promise.all([allowed, outside, stateDir].map((dir) => Deno.mkdir(dir)));
  const driver = await UserspaceDriver.start({
    nbd: { tcp: { hostname: "127.0.0.1", port: 0 } },
    stateDir,
    engineParams: options.engineParams ?? API_ENGINE_PARAMS,
    logger: () => {},
  });
  const metrics = new Metrics();
  let server: HttpServer | undefined;
  try {
    const app = createApp(options.wrapDriver ? options.wrapDriver(driver) : driver, {
      paths: await PathPolicy.create([allowed]),
      token: options.token,
      bodyLimitBytes: options.bodyLimitBytes,
      metrics,
    });
    server = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), app.fetch);
    const baseUrl = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
    const client = createClient({ baseUrl, token: options.token, ...options.client });
    await body({
      baseUrl,
      client,
      driver,
      metrics,
      root,
      allowed,
      outside,
      stateDir,
      makeDisk: async (name, sizeBytes, seed = 1) => {
        const path = join(allowed, name);
        await writeDisk(path, sizeBytes, { seed });
        return path;
      },
      fetch: (path, init) => fetch(`${baseUrl}${path}`, init),
    });
  } finally {
    await driver.close();
    if (server) {
      await server.shutdown();
    }
    await Deno.remove(root, { recursive: true });
  }
}
