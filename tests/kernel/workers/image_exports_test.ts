/**
 * The kernel backend's image exports (fake kernel, real clients) served by
 * the blocking Worker plane (`workers: 2`), as `blksnapctl serve` does by
 * default: every request delegated to the owner's KernelImageExports.
 */

import { useNbdWorkers } from "../../_helpers/nbd_workers_mode.ts";
useNbdWorkers(2);
await import("../image_exports_test.ts");
