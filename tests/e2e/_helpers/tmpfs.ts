/**
 * A tmpfs of its own for a case (for difference storages "on tmpfs", as the kernel module's
 * documentation describes them), mounted under /tmp and removed when the case's stack unwinds.
 * Unmounting doubles as a check that nothing holds a file there any more: the module keeps a
 * snapshot's difference storage open until it releases the snapshot.
 *
 * @module
 */

import { run, waitFor } from "./sh.ts";

/** A mounted tmpfs. */
export interface Tmpfs {
  /** The mount point. */
  readonly dir: string;
  /**
   * Unmounts it, retrying while it is busy for up to `timeoutMs` (default 5 s); once unmounted,
   * later calls do nothing.
   *
   * @throws {Error} when it is still busy after `timeoutMs`.
   */
  unmount(options?: { timeoutMs?: number }): Promise<void>;
}

/**
 * Mounts a tmpfs of `sizeBytes` on a new folder under /tmp; `stack` unmounts and removes it.
 */
export async function mountTmpfs(
  stack: AsyncDisposableStack,
  options: { sizeBytes: number },
): Promise<Tmpfs> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "lab-tmpfs-" });
  stack.defer(() => Deno.remove(dir));
  await run("mount", ["-t", "tmpfs", "-o", `size=${options.sizeBytes},mode=0700`, "tmpfs", dir]);
  let mounted = true;
  const unmount = async ({ timeoutMs = 5000 } = {}) => {
    let busy = "";
    try {
      await waitFor(`${dir} to unmount`, async () => {
        if (!mounted) return true;
        const result = await run("umount", [dir], { allowFailure: true });
        busy = result.stderr.trim();
        mounted = result.code !== 0;
        return !mounted;
      }, { timeoutMs });
    } catch (error) {
      throw new Error(`${(error as Error).message} (${busy})`);
    }
  };
  stack.defer(() => unmount());
  return { dir, unmount };
}
