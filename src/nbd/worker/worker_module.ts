/**
 * Where the plane's Worker module is, and whether it is there: a
 * single-file bundle of the service (`deno task bundle`) carries no second
 * module, so `--nbd-workers auto` then serves on the main thread.
 *
 * @module
 */

/** The Worker module's URL (connection_worker.ts beside this file). */
export const WORKER_MODULE_URL: URL = new URL("./connection_worker.ts", import.meta.url);

/** True when the Worker module can be loaded from where this module was. */
export function workerModuleAvailable(): boolean {
  if (WORKER_MODULE_URL.protocol !== "file:") return true;
  try {
    return Deno.statSync(WORKER_MODULE_URL).isFile;
  } catch {
    return false;
  }
}
