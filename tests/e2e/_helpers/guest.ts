/**
 * What an e2e case knows about the lab guest it runs in, and how it declares what it needs.
 * The guest's runner (lab/guest/run.sh) sets LAB_* variables; outside the guest (the default
 * `deno task test` on a developer's machine) none is set and every e2e case is skipped with
 * that reason.
 *
 * An e2e case is a Deno test declared with {@link labTest}: `requires` lists what it needs, and a
 * case whose needs are not met is reported as skipped, with the reason printed and recorded
 * for the lab's report.
 *
 * @module
 */

/** Things a case may need. */
export type Requirement =
  /** Running inside the lab guest (implied by every other requirement). */
  | "guest"
  /**
   * The blksnap module: a source folder (--module-src) or prebuilt .ko files (--module-ko) of
   * the out-of-tree module, or the kernel's own blksnap (built in, or among the modules of a
   * --kernel-image).
   */
  | "module"
  /** The module's source folder (--module-src). */
  | "module-src"
  /** The service bundle installed in the image (/opt/blksnap/blksnap.js). */
  | "service";

/** The lab settings of this guest run, from the environment. */
export interface LabEnv {
  /** The run's input folder (tests, module input) and output folder (results, logs). */
  readonly inDir?: string;
  readonly outDir?: string;
  /** Module source folder, when --module-src was given. */
  readonly moduleSrc?: string;
  /** Folder of prebuilt .ko files, when --module-ko was given. */
  readonly moduleKo?: string;
  /** A spare virtio disk for the case's use (raw, zero-filled at start). */
  readonly scratchDisk?: string;
  /** The service bundle, when the image has one. */
  readonly serviceBundle?: string;
  /** The kernel package the image was built with. */
  readonly kernelPackage?: string;
  /** The release of the --kernel-image this run boots instead of the image's kernel. */
  readonly kernelImage?: string;
  /** That kernel's kbuild tree, when --kernel-headers was given. */
  readonly kernelHeaders?: string;
  /**
   * How the running kernel has blksnap of its own, as the runner found it at start: "builtin"
   * (/dev/blksnap-control existed before anything was loaded) or "module" (a --kernel-image
   * whose modules include blksnap).
   */
  readonly kernelBlksnap?: "builtin" | "module";
}

function env(name: string): string | undefined {
  const value = Deno.env.get(name);
  return value === undefined || value === "" ? undefined : value;
}

/** Reads the lab settings (all undefined outside the guest). */
export function labEnv(): LabEnv {
  return {
    inDir: env("LAB_IN"),
    outDir: env("LAB_OUT"),
    moduleSrc: env("LAB_MODULE_SRC"),
    moduleKo: env("LAB_MODULE_KO"),
    scratchDisk: env("LAB_SCRATCH_DISK"),
    serviceBundle: env("LAB_SERVICE_BUNDLE"),
    kernelPackage: env("LAB_KERNEL_PACKAGE"),
    kernelImage: env("LAB_KERNEL_IMAGE"),
    kernelHeaders: env("LAB_KERNEL_HEADERS"),
    kernelBlksnap: blksnapKind(env("LAB_KERNEL_BLKSNAP")),
  };
}

function blksnapKind(value: string | undefined): LabEnv["kernelBlksnap"] {
  return value === "builtin" || value === "module" ? value : undefined;
}

/** Why `requires` is not met in `lab`, or undefined when it is. */
export function unmetRequirement(
  requires: readonly Requirement[],
  lab: LabEnv = labEnv(),
): string | undefined {
  if (lab.inDir === undefined) return "runs only inside the lab guest (deno task lab)";
  for (const requirement of requires) {
    if (
      requirement === "module" && lab.moduleSrc === undefined && lab.moduleKo === undefined &&
      lab.kernelBlksnap === undefined
    ) {
      return "no blksnap module given (deno task lab --module-src DIR or --module-ko DIR), " +
        "and the kernel has none built in";
    }
    if (requirement === "module-src" && lab.moduleSrc === undefined) {
      return "no module source given (deno task lab --module-src DIR)";
    }
    if (requirement === "service" && lab.serviceBundle === undefined) {
      return "the lab image has no service bundle (src/cli/main.ts did not bundle)";
    }
  }
  return undefined;
}

/** Definition of an e2e case. */
export interface LabTestDefinition {
  /** Test name, as it appears in the report. */
  name: string;
  /** What the case needs; "guest" is implied. */
  requires?: readonly Requirement[];
  /** The case. */
  fn: (t: Deno.TestContext) => void | Promise<void>;
}

/**
 * Declares an e2e case: a Deno test that is skipped, with the reason printed and appended to
 * $LAB_OUT/skips.jsonl, when its requirements are not met.
 */
export function labTest(definition: LabTestDefinition): void {
  const reason = unmetRequirement(definition.requires ?? ["guest"]);
  if (reason !== undefined) recordSkip(definition.name, reason);
  Deno.test({ name: definition.name, ignore: reason !== undefined, fn: definition.fn });
}

/**
 * Reports a skipped case: prints the reason and appends it to $LAB_OUT/skips.jsonl (read by the
 * lab's report). For cases declared without {@link labTest}, e.g. the conformance suite's.
 */
export function recordSkip(name: string, reason: string): void {
  console.log(`SKIP ${name}: ${reason}`);
  const { outDir } = labEnv();
  if (outDir !== undefined) {
    Deno.writeTextFileSync(
      `${outDir}/skips.jsonl`,
      JSON.stringify({ name, reason }) + "\n",
      { append: true },
    );
  }
}
