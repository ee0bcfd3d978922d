/**
 * Which NBD server configuration the fixtures start: the single-threaded
 * server (0, the default) or the blocking Worker plane with N Workers, set
 * by a suite wrapper ({@link useNbdWorkers}, see tests/nbd/workers/) or for
 * a whole run by BLKSNAP_TEST_NBD_WORKERS=N.
 *
 * @module
 */

let chosen: number | undefined;

/** Makes the fixtures of this test process serve NBD on `count` Workers. */
export function useNbdWorkers(count: number): void {
  chosen = count;
}

/** The Worker count the fixtures pass as `workers` (0: the single-threaded server). */
export function nbdTestWorkers(): number {
  return chosen ?? Number(Deno.env.get("BLKSNAP_TEST_NBD_WORKERS") ?? 0);
}
