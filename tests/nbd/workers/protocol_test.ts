/**
 * The handshake and transmission suites against the blocking Worker plane
 * (`workers: 2`): the same tests, the server's protocol code running in
 * Workers over blocking FFI sockets, exports reached through the owner.
 */

import { useNbdWorkers } from "../../_helpers/nbd_workers_mode.ts";
useNbdWorkers(2);
await import("../handshake_test.ts");
await import("../transmission_test.ts");
await import("../client_test.ts");
