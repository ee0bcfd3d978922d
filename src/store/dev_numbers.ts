/**
 * Linux device numbers: splitting a dev_t (as Deno.stat returns it in `dev`
 * and `rdev`) into major and minor with glibc's encoding (sys/sysmacros.h):
 * major = bits 8-19 and 32-43, minor = bits 0-7 and 20-31 and 44-63.
 *
 * @module
 */

/** A device's major and minor numbers. */
export interface DeviceNumbers {
  /** Major number (the driver). */
  major: number;
  /** Minor number (the instance). */
  minor: number;
}

/** Splits a dev_t into major and minor numbers (glibc's gnu_dev_major/minor). */
export function splitDeviceNumber(dev: number): DeviceNumbers {
  const value = BigInt(dev);
  const major = ((value >> 8n) & 0xfffn) | ((value >> 32n) & ~0xfffn);
  const minor = (value & 0xffn) | ((value >> 12n) & ~0xffn);
  return { major: Number(major & 0xffffffffn), minor: Number(minor & 0xffffffffn) };
}

/** Builds a dev_t from major and minor numbers (glibc's gnu_dev_makedev). */
export function makeDeviceNumber(major: number, minor: number): number {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  const value = ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) |
    ((mi & ~0xffn) << 12n);
  return Number(value);
}
