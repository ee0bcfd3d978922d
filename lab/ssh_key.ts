/**
 * Throwaway SSH keys: one per image build (the build's root login) and one
 * per `--keep` run. The private half never leaves the cache folder and is
 * deleted with it.
 *
 * @module
 */

import { runLogged } from "./process.ts";

/** Generates an ed25519 key without a passphrase at `path` (and `path`.pub); returns the public line. */
export async function makeSshKey(path: string, comment: string): Promise<string> {
  await runLogged("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path]);
  return await Deno.readTextFile(`${path}.pub`);
}
