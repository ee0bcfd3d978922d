/**
 * The server suite (listeners, counts, close, refusals, handshake timeout)
 * against the blocking Worker plane (`workers: 2`).
 */

import { useNbdWorkers } from "../../_helpers/nbd_workers_mode.ts";
useNbdWorkers(2);
await import("../server_test.ts");
