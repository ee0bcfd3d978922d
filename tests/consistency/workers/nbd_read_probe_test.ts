/**
 * The read probe suite against the blocking Worker plane (`workers: 2`):
 * the Workers run the transmission code and show their READs to the
 * owner's probe board through its shared memory.
 */

import { useNbdWorkers } from "../../_helpers/nbd_workers_mode.ts";
useNbdWorkers(2);
await import("../nbd_read_probe_test.ts");
