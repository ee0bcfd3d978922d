/**
 * The SnapshotDriver conformance suite on the userspace backend: a
 * UserspaceDriver on a free loopback port, temp files as devices, writes
 * through the devices' NBD exports.
 */

import { registerDriverConformance } from "../conformance/driver_conformance.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";

registerDriverConformance({
  name: "userspace",
  backend: "userspace",
  setup: () => userspaceFixture(),
});
