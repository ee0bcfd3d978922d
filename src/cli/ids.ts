/**
 * Snapshot and device arguments, checked before any request so that a
 * mistyped id gets a message a person can read (not the API's pattern), and
 * device paths accepted wherever a device id is: `/dev/sdb` or
 * `./disk0.img` (anything with a `/`) names the attached device whose path
 * it resolves to.
 *
 * @module
 */

import { resolve } from "node:path";
import type { BlksnapClient } from "../client/client.ts";
import { ProblemError } from "../client/problem_error.ts";
import { DEVICE_ID_PATTERN, SNAPSHOT_ID_PATTERN } from "../api/models.ts";
import { UsageError } from "./exit_codes.ts";

/** `text` as a snapshot id; UsageError naming `what` when it is not a UUID. */
export function snapshotArgument(text: string, what = "SNAPSHOT"): string {
  const id = text.trim().toLowerCase();
  if (!SNAPSHOT_ID_PATTERN.test(id)) {
    throw new UsageError(
      `${what} must be a snapshot id (a UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e), ` +
        `got "${text}"`,
    );
  }
  return id;
}

/** True when `text` names a device by path rather than by id. */
export function isDevicePath(text: string): boolean {
  return text.includes("/");
}

async function canonicalPath(path: string): Promise<string> {
  const absolute = resolve(path);
  try {
    return await Deno.realPath(absolute);
  } catch {
    return absolute;
  }
}

/**
 * The device id `text` names: an id as it is, or a path (relative ones
 * against the working directory, symlinks resolved) looked up among the
 * attached devices. UsageError for a malformed id; a NOT_FOUND ProblemError
 * when no attached device has that path.
 */
export async function deviceArgument(
  client: BlksnapClient,
  text: string,
  what = "DEVICE",
): Promise<string> {
  if (!isDevicePath(text)) {
    if (!DEVICE_ID_PATTERN.test(text)) {
      throw new UsageError(
        `${what} must be a device id (letters, digits, '.', '_', ':' and '-', at most 64 ` +
          `characters, starting with a letter or digit) or a device path, got "${text}"`,
      );
    }
    return text;
  }
  const wanted = await canonicalPath(text);
  const devices = await client.devices.list();
  const found = devices.find((device) => device.path === wanted) ??
    devices.find((device) => device.path === resolve(text));
  if (found) return found.id;
  throw new ProblemError({
    type: "urn:blksnap:problem:not-found",
    title: "Not found",
    status: 404,
    detail: `No attached device has the path ${wanted}`,
    code: "NOT_FOUND",
  });
}
