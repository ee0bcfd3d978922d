/**
 * The real-client suites (nbdinfo, nbdsh, nbdcopy, qemu) and the fuzz test
 * against the blocking Worker plane (`workers: 2`).
 */

import { useNbdWorkers } from "../../_helpers/nbd_workers_mode.ts";
useNbdWorkers(2);
await import("../nbdinfo_test.ts");
await import("../nbdsh_test.ts");
await import("../nbdcopy_test.ts");
await import("../qemu_test.ts");
await import("../fuzz_test.ts");
