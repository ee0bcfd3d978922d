/**
 * Issue 10, point 3: the allowed-path check cannot be raced. Another
 * process swaps a folder of the path for a symlink to a folder outside the
 * prefixes, and plants and removes a symlink at a new storage name, as fast
 * as it can, while the API is asked to attach and to create snapshots
 * through those names thousands of times. Nothing outside is ever attached
 * (the outside disk has another size, so an escape shows in the CBT
 * capacity), created or grown.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { withService } from "../_helpers/service_fixture.ts";
import { figures } from "./_serve.ts";

const MIB = 2 ** 20;
const ATTEMPTS = 1500;

/**
 * A python3 loop running `script` until `seconds` pass (it ends by itself).
 * `exchange(a, b)` swaps two names atomically (renameat2 RENAME_EXCHANGE),
 * so the swapped name always exists, a folder one moment, a symlink the next.
 */
function startSwapper(script: string, seconds: number): Deno.ChildProcess {
  const program = "import ctypes, os, time\n" +
    "libc = ctypes.CDLL(None, use_errno=True)\n" +
    "def exchange(a, b):\n" +
    "    libc.renameat2(-100, a.encode(), -100, b.encode(), 2)\n" +
    `end = time.time() + ${seconds}\nwhile time.time() < end:\n` +
    script.split("\n").map((line) => `    ${line}`).join("\n") + "\n";
  return new Deno.Command("python3", { args: ["-c", program], stdout: "null", stderr: "piped" })
    .spawn();
}

async function stopSwapper(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch {
    // ended by itself
  }
  await child.output();
}

Deno.test("a folder of a device path swapped for a symlink outside: nothing outside is ever attached", async () => {
  await withService({}, async ({ allowed, outside, fetch }) => {
    // "dir" is a real folder, "other" a symlink to a folder outside; they are exchanged.
    const swapped = join(allowed, "dir");
    const other = join(allowed, "other");
    await Deno.mkdir(join(allowed, "dir"));
    await Deno.mkdir(join(outside, "dir"));
    await Deno.writeFile(join(allowed, "dir", "disk.img"), new Uint8Array(MIB));
    const outsideDisk = join(outside, "dir", "disk.img");
    await Deno.writeFile(outsideDisk, new Uint8Array(2 * MIB).fill(0x5a));
    await Deno.symlink(join(outside, "dir"), other);
    const swapper = startSwapper(
      [
        `exchange(${JSON.stringify(other)}, ${JSON.stringify(swapped)})`,
      ].join("\n"),
      120,
    );
    const outcomes = new Map<number, number>();
    const started = performance.now();
    try {
      for (let i = 0; i < ATTEMPTS; i++) {
        const response = await fetch("/v1/devices", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ path: join(swapped, "disk.img"), name: "d" }),
        });
        const body = await response.json();
        outcomes.set(response.status, (outcomes.get(response.status) ?? 0) + 1);
        if (response.status === 201) {
          const cbt = await (await fetch("/v1/devices/d/cbt")).json();
          assert.equal(cbt.capacityBytes, MIB, `attempt ${i} attached the outside disk`);
          const gone = await fetch("/v1/devices/d", { method: "DELETE" });
          assert.equal(gone.status, 204);
        } else {
          assert.ok([400, 403, 404].includes(response.status), JSON.stringify(body));
          assert.doesNotMatch(body.detail, /outside\/dir/, "no symlink target is shown");
        }
      }
    } finally {
      await stopSwapper(swapper);
    }
    assert.deepEqual(await Deno.readFile(outsideDisk), new Uint8Array(2 * MIB).fill(0x5a));
    figures("symlink-swap-attach", {
      attempts: ATTEMPTS,
      ...Object.fromEntries([...outcomes].map(([status, n]) => [`http${status}`, n])),
      seconds: ((performance.now() - started) / 1000).toFixed(1),
    });
    assert.ok((outcomes.get(201) ?? 0) > 0, "some attaches met the real folder");
    assert.ok((outcomes.get(403) ?? 0) > 0, "some met the symlink");
  });
});

Deno.test("storage paths raced: a swapped folder and a planted symlink never create or grow a file outside", async () => {
  await withService({}, async ({ allowed, outside, client, fetch, makeDisk }) => {
    await client.devices.attach({ path: await makeDisk("s.img", MIB), name: "s" });
    const other = join(allowed, "other");
    const swapped = join(allowed, "dir");
    const planted = join(allowed, "planted.diff");
    const target = join(outside, "target.bin");
    await Deno.mkdir(swapped);
    await Deno.mkdir(join(outside, "dir"));
    await Deno.writeFile(target, new Uint8Array(12345).fill(7));
    await Deno.symlink(join(outside, "dir"), other);
    const swapper = startSwapper(
      [
        `exchange(${JSON.stringify(other)}, ${JSON.stringify(swapped)})`,
        `try: os.symlink(${JSON.stringify(target)}, ${JSON.stringify(planted)})`,
        "except OSError: pass",
        `try: os.unlink(${JSON.stringify(planted)})`,
        "except OSError: pass",
      ].join("\n"),
      120,
    );
    const outcomes = new Map<string, number>();
    const started = performance.now();
    const count = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    try {
      for (let i = 0; i < ATTEMPTS; i++) {
        const path = i % 2 ? join(swapped, "new.diff") : planted;
        const response = await fetch("/v1/snapshots", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ devices: ["s"], diffStorage: { path, limitBytes: MIB } }),
        });
        const body = await response.json();
        count(`${i % 2 ? "folder" : "planted"}${response.status}`);
        const escaped = [...Deno.readDirSync(join(outside, "dir"))];
        assert.deepEqual(escaped, [], `attempt ${i} created a file outside`);
        if (response.status === 201) {
          const gone = await fetch(`/v1/snapshots/${body.id}`, { method: "DELETE" });
          assert.equal(gone.status, 204);
        } else {
          assert.ok([400, 403, 404, 409].includes(response.status), JSON.stringify(body));
        }
      }
    } finally {
      await stopSwapper(swapper);
    }
    assert.deepEqual(await Deno.readFile(target), new Uint8Array(12345).fill(7), "not grown");
    figures("symlink-swap-storage", {
      attempts: ATTEMPTS,
      ...Object.fromEntries(outcomes),
      seconds: ((performance.now() - started) / 1000).toFixed(1),
    });
    assert.ok((outcomes.get("folder201") ?? 0) + (outcomes.get("planted201") ?? 0) > 0);
  });
});
