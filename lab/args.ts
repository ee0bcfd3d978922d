/**
 * The command line of `deno task lab`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ServiceError } from "../src/errors.ts";

/** Accelerator choice: probe KVM, or force one. */
export type AccelChoice = "auto" | "kvm" | "tcg";

/** Parsed options of `deno task lab`. */
export interface LabOptions {
  /** Kernel image package of the guest (its headers package is derived from it). */
  readonly kernel: string;
  /** Module source folder, built in the guest. */
  readonly moduleSrc?: string;
  /** Folder of prebuilt .ko files. */
  readonly moduleKo?: string;
  /** A kernel image (bzImage) to boot instead of the image's Debian kernel. */
  readonly kernelImage?: string;
  /** The custom kernel's module folder (`lib/modules/<release>` of `make modules_install`). */
  readonly kernelModules?: string;
  /** The custom kernel's kbuild tree, for building --module-src against it. */
  readonly kernelHeaders?: string;
  /** Run only the e2e files whose path contains this, or else the cases whose name matches. */
  readonly only?: string;
  /** Leave the VM up after the suite and print how to reach it. */
  readonly keep: boolean;
  /** Accelerator: probe KVM (auto) or force one. */
  readonly accel: AccelChoice;
  /** Give up on the guest after this many minutes. */
  readonly timeoutMinutes: number;
  /** Rebuild the image even when the cache has it. */
  readonly rebuild: boolean;
  /** Print every line the guest prints, not just the cases. */
  readonly verbose: boolean;
  /** Print usage and exit. */
  readonly help: boolean;
}

/** Usage text. */
export const labUsage: string = `Usage: deno task lab [options]

Builds the lab image when it is missing or its inputs changed, boots it with QEMU, runs the
e2e suite (tests/e2e) inside and brings the results back into a run folder.

  --kernel PKG        guest kernel package (default linux-image-amd64; e.g.
                      linux-image-cloud-amd64, linux-image-rt-amd64); headers follow it
  --module-src DIR    blksnap module source folder, built in the guest against its headers
  --module-ko DIR     folder of prebuilt .ko files for the guest's kernel
  --kernel-image PATH boot this kernel (a bzImage, e.g. a 6.12 build with blksnap built in)
                      instead of the image's Debian kernel; the image stays the same
  --kernel-modules DIR  with --kernel-image: its lib/modules/<release> folder, installed
                      in the run's guest (for a kernel whose blksnap is a module)
  --kernel-headers DIR  with --kernel-image: its kbuild tree, to build --module-src against
  --only PATTERN      run the e2e files whose path contains PATTERN; when no file matches,
                      the cases whose name matches PATTERN (deno test --filter)
  --keep              leave the VM running afterwards and print how to reach it
  --accel MODE        auto (probe KVM, else TCG), kvm or tcg (default auto)
  --timeout MIN       give up on the guest after MIN minutes (default 60)
  --rebuild           rebuild the image even if the cache has it
  --verbose           show everything the guest prints
  -h, --help          this text

Without --module-src or --module-ko the module cases are reported as skipped, unless the
kernel has blksnap built in (a --kernel-image with CONFIG_BLKSNAP=y).
`;

/**
 * Parses `args`.
 *
 * @throws {ServiceError} INVALID_ARGUMENT for unknown options, bad values, or both module inputs.
 */
export function parseLabArgs(args: readonly string[]): LabOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        kernel: { type: "string", default: "linux-image-amd64" },
        "module-src": { type: "string" },
        "module-ko": { type: "string" },
        "kernel-image": { type: "string" },
        "kernel-modules": { type: "string" },
        "kernel-headers": { type: "string" },
        only: { type: "string" },
        keep: { type: "boolean", default: false },
        accel: { type: "string", default: "auto" },
        timeout: { type: "string", default: "60" },
        rebuild: { type: "boolean", default: false },
        verbose: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      allowPositionals: false,
    }));
  } catch (error) {
    throw new ServiceError("INVALID_ARGUMENT", (error as Error).message, { cause: error });
  }
  if (!/^linux-image-[a-z0-9][a-z0-9.+-]*$/.test(values.kernel)) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `--kernel ${values.kernel} is not a kernel image package name (linux-image-...)`,
      { field: "kernel" },
    );
  }
  if (values["module-src"] !== undefined && values["module-ko"] !== undefined) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      "--module-src and --module-ko exclude each other: give the source or the built modules",
      { field: "module-src" },
    );
  }
  for (const name of ["kernel-modules", "kernel-headers"] as const) {
    if (values[name] !== undefined && values["kernel-image"] === undefined) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `--${name} belongs to a custom kernel: give --kernel-image too`,
        { field: name },
      );
    }
  }
  if (
    values["kernel-image"] !== undefined && values["module-src"] !== undefined &&
    values["kernel-headers"] === undefined
  ) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      "--module-src with --kernel-image needs --kernel-headers (the kbuild tree of that " +
        "kernel): the image's Debian headers are for another kernel",
      { field: "kernel-headers" },
    );
  }
  if (!["auto", "kvm", "tcg"].includes(values.accel)) {
    throw new ServiceError("INVALID_ARGUMENT", `--accel must be auto, kvm or tcg`, {
      field: "accel",
    });
  }
  const timeoutMinutes = Number(values.timeout);
  if (!Number.isFinite(timeoutMinutes) || timeoutMinutes <= 0) {
    throw new ServiceError("INVALID_ARGUMENT", `--timeout must be a positive number of minutes`, {
      field: "timeout",
    });
  }
  if (values.only !== undefined && values.only.trim() === "") {
    throw new ServiceError("INVALID_ARGUMENT", "--only needs a non-empty pattern", {
      field: "only",
    });
  }
  return {
    kernel: values.kernel,
    ...(values["module-src"] !== undefined ? { moduleSrc: values["module-src"] } : {}),
    ...(values["module-ko"] !== undefined ? { moduleKo: values["module-ko"] } : {}),
    ...(values["kernel-image"] !== undefined ? { kernelImage: values["kernel-image"] } : {}),
    ...(values["kernel-modules"] !== undefined ? { kernelModules: values["kernel-modules"] } : {}),
    ...(values["kernel-headers"] !== undefined ? { kernelHeaders: values["kernel-headers"] } : {}),
    ...(values.only !== undefined ? { only: values.only } : {}),
    keep: values.keep,
    accel: values.accel as AccelChoice,
    timeoutMinutes,
    rebuild: values.rebuild,
    verbose: values.verbose,
    help: values.help,
  };
}

/** The headers package that matches a kernel image package. */
export function headersPackage(kernelPackage: string): string {
  return kernelPackage.replace(/^linux-image-/, "linux-headers-");
}
