/**
 * A tmpfs of its own for a case (for difference storages "on tmpfs", as the kernel module's
 * documentation describes them), mounted under /tmp and removed when the case's stack unwinds.
 *
 * @module
 */

import { run } from "./sh.ts";

/**
 * Mounts a tmpfs of `sizeBytes` on a new folder under /tmp and returns the folder; `stack`
 * unmounts and removes it.
 */
export async function mountTmpfs(
  stack: AsyncDisposableStack,
  options: { sizeBytes: number },
): Promise<string> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "lab-tmpfs-" });
  stack.defer(() => Deno.remove(dir));
  await run("mount", ["-t", "tmpfs", "-o", `size=${options.sizeBytes},mode=0700`, "tmpfs", dir]);
  stack.defer(async () => {
    await run("umount", [dir]);
  });
  return dir;
}
