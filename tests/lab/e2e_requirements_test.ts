import assert from "node:assert/strict";
import { type LabEnv, unmetRequirement } from "../e2e/_helpers/guest.ts";

const guest: LabEnv = { inDir: "/var/lib/blksnap-lab/in", outDir: "/var/lib/blksnap-lab/out" };

Deno.test("e2e cases skip outside the guest, whatever they require", () => {
  assert.match(unmetRequirement(["guest"], {})!, /only inside the lab guest/);
  assert.match(unmetRequirement(["module"], {})!, /only inside the lab guest/);
});

Deno.test("module cases need --module-src or --module-ko; build cases need the source", () => {
  assert.equal(unmetRequirement(["guest"], guest), undefined);
  assert.match(unmetRequirement(["module"], guest)!, /--module-src DIR or --module-ko DIR/);
  assert.match(unmetRequirement(["module"], guest)!, /the kernel has none built in/);
  assert.equal(unmetRequirement(["module"], { ...guest, moduleKo: "/ko" }), undefined);
  assert.equal(unmetRequirement(["module"], { ...guest, moduleSrc: "/src" }), undefined);
  assert.match(unmetRequirement(["module-src"], { ...guest, moduleKo: "/ko" })!, /--module-src/);
});

Deno.test("service cases need the bundle in the image", () => {
  assert.match(unmetRequirement(["service"], guest)!, /no service bundle/);
  assert.equal(
    unmetRequirement(["service", "module"], {
      ...guest,
      serviceBundle: "/opt/blksnap/blksnap.js",
      moduleSrc: "/src",
    }),
    undefined,
  );
});

Deno.test("module cases run on a kernel with blksnap of its own; build cases still need the source", () => {
  for (const kernelBlksnap of ["builtin", "module"] as const) {
    const own = { ...guest, kernelImage: "6.12.117", kernelBlksnap };
    assert.equal(unmetRequirement(["module"], own), undefined);
    assert.match(unmetRequirement(["module-src"], own)!, /--module-src/);
  }
});
