/**
 * The SnapshotDriver conformance suite: one set of cases that every backend
 * must pass, with the ServiceError codes of src/errors.ts as the contract.
 * {@link registerDriverConformance} registers the cases (declared in
 * cases/*.ts) as Deno tests for a {@link ConformanceTarget}; a runner file
 * per backend calls it:
 *
 * - tests/userspace/userspace_conformance_test.ts (UserspaceDriver),
 * - tests/kernel/kernel_conformance_test.ts (KernelDriver on the fake kernel),
 * - the lab's e2e file (KernelDriver on the real module).
 *
 * @example
 * ```ts ignore
 * import { registerDriverConformance } from "../conformance/driver_conformance.ts";
 *
 * registerDriverConformance({
 *   name: "kernel (lab)",
 *   backend: "kernel",
 *   setup: () => labKernelFixture(), // a ConformanceFixture: driver, devices, writers, cleanup
 * });
 * ```
 *
 * @module
 */

import { cbtCases } from "./cases/cbt.ts";
import { deviceCases } from "./cases/devices.ts";
import { eventCases } from "./cases/events.ts";
import { imageCases } from "./cases/images.ts";
import { snapshotCases } from "./cases/snapshots.ts";
import { tokenCases } from "./cases/tokens.ts";
import type { ConformanceTarget } from "./fixture.ts";
import type { ConformanceCase } from "./steps.ts";

export type {
  ConformanceFeature,
  ConformanceFixture,
  ConformanceTarget,
  CreateDeviceOptions,
} from "./fixture.ts";

/** Every case of the suite, in the order they run. */
export const conformanceCases: readonly ConformanceCase[] = [
  ...deviceCases,
  ...cbtCases,
  ...snapshotCases,
  ...imageCases,
  ...eventCases,
  ...tokenCases,
];

/**
 * Registers every conformance case for `target` as a Deno test named
 * "`target.name`: <behaviour>". Each case sets up a fresh fixture and always
 * cleans it up. Cases needing a feature the target lists as unsupported (or
 * all cases, with `target.ignore`) are skipped, their reason printed and
 * passed to `target.onSkip`.
 */
export function registerDriverConformance(target: ConformanceTarget): void {
  for (const { name, needs, body } of conformanceCases) {
    const full = `${target.name}: ${name}`;
    const missing = needs.find((feature) => target.unsupported?.[feature] !== undefined);
    const reason = target.ignore ??
      (missing === undefined ? undefined : `${missing}: ${target.unsupported![missing]}`);
    if (reason !== undefined) {
      console.log(`skipping "${full}": ${reason}`);
      target.onSkip?.(full, reason);
    }
    Deno.test({
      name: full,
      ignore: reason !== undefined,
      sanitizeOps: target.sanitizeOps ?? true,
      sanitizeResources: target.sanitizeResources ?? true,
      async fn() {
        const fx = await target.setup();
        try {
          await body(fx, target);
        } finally {
          await fx.cleanup();
        }
      },
    });
  }
}
