/**
 * What the userspace backend's Worker fast paths (device_fast_path.ts,
 * image_fast_path.ts) share: waiting for a tracker's write gate to open
 * before a view is made, and telling whether, and as what, a Worker can
 * open a store again by name.
 *
 * @module
 */

import type { BlockStore } from "../engine/block_store.ts";
import { WriteGate } from "../engine/tracker.ts";
import type { FileIdentityView } from "../nbd/worker/fast_path.ts";

/** Resolves once `gate` is not frozen. */
export async function gateOpen(gate: Int32Array): Promise<void> {
  for (;;) {
    const frozen = Atomics.load(gate, WriteGate.FROZEN);
    if (frozen === 0) return;
    // The timer keeps the event loop alive: a pending Atomics.waitAsync does not.
    const wait = Atomics.waitAsync(gate, WriteGate.FROZEN, frozen);
    if (!wait.async) continue;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([wait.value, new Promise((resolve) => timer = setTimeout(resolve, 50))]);
    clearTimeout(timer);
  }
}

/** True when a Worker can open `store` again by name (not memory, not an unnamed file). */
export function reopenable(store: BlockStore): boolean {
  return store.identity.kind !== "memory" && !store.name.endsWith("(unnamed file)");
}

/** What a Worker's descriptor of `store` must be. */
export function identityView(store: BlockStore): FileIdentityView {
  return {
    block: store.identity.kind === "block",
    device: store.identity.device,
    inode: store.identity.inode,
  };
}
