/**
 * The check both NBD planes (server.ts, worker/worker_server.ts) make
 * before they listen on a Unix socket path: an existing path is refused,
 * never replaced (it may be another server's live socket, or not a socket
 * at all; the service clears its own stale socket before it starts).
 *
 * @module
 */

import { ServiceError } from "../errors.ts";

/** Throws ServiceError CONFLICT (field `unixPath`) when something exists at `path`. */
export async function refuseExistingUnixPath(path: string): Promise<void> {
  try {
    await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  throw new ServiceError("CONFLICT", `Cannot listen on ${path}: the path exists`, {
    field: "unixPath",
  });
}
