/**
 * `--nbd-workers N|auto|0` of `blksnapctl serve`: how many blocking Workers
 * serve NBD (src/nbd/worker). 0 serves every connection on the main thread;
 * `auto` starts max(4, cores) Workers (nbdcopy opens four
 * connections; 0 in a single-file bundle, which has no Worker module), and
 * the pool grows while connections wait, up to 16. The default is `auto`
 * for the userspace backend (README "Performance": faster on reads, image
 * pulls and 4 KiB requests at queue depth 1) and 0 for the kernel backend.
 *
 * @module
 */

import { workerModuleAvailable } from "../../nbd/worker/worker_module.ts";
import { UsageError } from "../exit_codes.ts";

/**
 * The Worker count when neither the flag nor BLKSNAP_NBD_WORKERS is given:
 * `auto` for the userspace backend, whose device and image exports have a
 * Worker fast path; 0 for the kernel backend, whose image exports do not
 * (every request would be asked of the main thread).
 */
export function nbdWorkersDefault(backend: "kernel" | "userspace"): number {
  return backend === "userspace" ? nbdWorkers("auto") : 0;
}

/** Help lines of the flag. */
export const NBD_WORKERS_HELP =
  `  --nbd-workers N|auto|0  NBD connections served by N blocking Workers on every core; auto:
                          max(4, cores), growing with the connections up to 16; 0: on the
                          main thread (env BLKSNAP_NBD_WORKERS, default auto for the
                          userspace backend, 0 for the kernel backend)
`;

/** The Worker count `text` asks for; UsageError when it is not a count from 0 to 256 or auto. */
export function nbdWorkers(text: string): number {
  if (text === "auto") {
    return workerModuleAvailable() ? Math.max(4, navigator.hardwareConcurrency) : 0;
  }
  if (!/^\d{1,3}$/.test(text) || Number(text) > 256) {
    throw new UsageError(`--nbd-workers must be a number from 0 to 256 or auto, got "${text}"`);
  }
  return Number(text);
}
