/**
 * Replacing a small state file atomically: the bytes go to a new temporary
 * file beside it (created exclusively, mode 0600), are synced, and the file
 * is renamed over the old one, so a crash leaves either the old or the new
 * content, never a mix; a failed write removes the temporary file.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";

/** Writes `bytes` to `path` atomically. IO naming `what` when it cannot be written. */
export async function replaceFileAtomically(
  path: string,
  bytes: Uint8Array,
  options: { what: string },
): Promise<void> {
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    const file = await Deno.open(temporary, { write: true, createNew: true, mode: 0o600 });
    try {
      for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw new ServiceError(
      "IO",
      `Cannot save ${options.what} ${path}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}
