/**
 * A custom kernel for one lab run (`--kernel-image`): a bzImage booted instead of the lab image's
 * Debian kernel, without an initrd (so what the guest needs to mount its root, virtio-blk and
 * ext4, must be built in). The image and its cache stay as they are: the kernel is an input of
 * the run only, and nothing cached is keyed on it or built for it.
 *
 * The release is read from the bzImage itself: the x86 boot protocol's setup header (at 0x1f1)
 * carries the magic "HdrS" at 0x202 and, at 0x20e, the offset (from 0x200) of the version string
 * `make` wrote, "6.12.117 (user@host) #1 SMP ...", whose first word is `uname -r`.
 *
 * @module
 */

import { ServiceError } from "../src/errors.ts";
import { sha256Hex } from "./cache_key.ts";

/** A kernel image given with --kernel-image. */
export interface CustomKernel {
  /** Absolute path of the bzImage. */
  readonly path: string;
  /** Its release (what `uname -r` will say in the guest). */
  readonly release: string;
  /** The whole version string of the image. */
  readonly version: string;
  /** Hex SHA-256 of the file, for the run's summary. */
  readonly sha256: string;
}

const HEADER_MAGIC_OFFSET = 0x202;
const VERSION_POINTER_OFFSET = 0x20e;
const SETUP_BASE = 0x200;

/**
 * The version string of the bzImage `bytes`, or undefined when `bytes` is not one (no "HdrS"
 * setup header, or no version string where the header points).
 */
export function bzImageVersion(bytes: Uint8Array): string | undefined {
  if (bytes.length < VERSION_POINTER_OFFSET + 2) return undefined;
  const magic = new TextDecoder().decode(
    bytes.subarray(HEADER_MAGIC_OFFSET, HEADER_MAGIC_OFFSET + 4),
  );
  if (magic !== "HdrS") return undefined;
  const pointer = bytes[VERSION_POINTER_OFFSET] | (bytes[VERSION_POINTER_OFFSET + 1] << 8);
  if (pointer === 0) return undefined;
  const start = SETUP_BASE + pointer;
  const end = bytes.indexOf(0, start);
  if (start >= bytes.length || end < 0 || end - start > 512) return undefined;
  const version = new TextDecoder().decode(bytes.subarray(start, end)).trim();
  return /^\d+\.\d+\S*( |$)/.test(version) ? version : undefined;
}

/**
 * Reads the kernel image at `path`.
 *
 * @throws {ServiceError} NOT_FOUND when it does not exist, INVALID_ARGUMENT when it is not a
 * bzImage.
 */
export async function readCustomKernel(path: string): Promise<CustomKernel> {
  let absolute: string;
  let bytes: Uint8Array;
  try {
    absolute = await Deno.realPath(path);
    bytes = await Deno.readFile(absolute);
  } catch (error) {
    throw new ServiceError("NOT_FOUND", `Cannot use --kernel-image ${path}: it does not exist`, {
      cause: error,
      field: "kernel-image",
    });
  }
  const version = bzImageVersion(bytes);
  if (version === undefined) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot use --kernel-image ${path}: it is not an x86 bzImage (no setup header with a ` +
        `version string; give arch/x86/boot/bzImage of the build)`,
      { field: "kernel-image" },
    );
  }
  return {
    path: absolute,
    release: version.split(" ")[0],
    version,
    sha256: await sha256Hex(bytes),
  };
}
