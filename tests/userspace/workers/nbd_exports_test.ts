/**
 * The userspace backend's NBD suites (device and image exports, destroy,
 * maps, tokens, sparse copies) with the driver serving NBD on the blocking
 * Worker plane (`nbd.workers: 2`): device exports on the Workers' fast path,
 * images and everything else through the owner.
 */

import { useNbdWorkers } from "../../_helpers/nbd_workers_mode.ts";
useNbdWorkers(2);
await import("../nbd_destroy_test.ts");
await import("../nbd_image_read_test.ts");
await import("../nbd_image_write_test.ts");
await import("../nbd_map_test.ts");
await import("../nbd_list_test.ts");
await import("../nbd_token_test.ts");
await import("../sparse_export_test.ts");
await import("../userspace_conformance_test.ts");
