import assert from "node:assert/strict";
import { pruneBuilds, pruneRuns } from "../../lab/prune.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("pruneBuilds drops older builds of the same kernel and dead partial builds", async () => {
  await withDir(async (dir) => {
    // A pid that is surely not running: beyond the kernel's pid_max.
    const dead = 4_194_305;
    const names = [
      "linux-image-amd64-0123456789abcdef",
      "linux-image-amd64-fedcba9876543210",
      `linux-image-amd64-1111111111111111.partial-${dead}`,
      `linux-image-amd64-2222222222222222.partial-${Deno.ppid}`,
      "linux-image-cloud-amd64-0123456789abcdef",
      "unrelated",
    ];
    for (const name of names) await Deno.mkdir(`${dir}/${name}`);
    const removed = await pruneBuilds(dir, { kernelPackage: "linux-image-amd64", keep: names[1] });
    assert.deepEqual(removed, [names[0], names[2]]);
    const left = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assert.deepEqual(left, [names[3], names[1], names[4], "unrelated"].sort());
  });
});

Deno.test("pruneBuilds treats the package name literally", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/linux-image-6.1.0-56-amd64-0123456789abcdef`);
    await Deno.mkdir(`${dir}/linux-image-6x1x0-56-amd64-0123456789abcdef`);
    const removed = await pruneBuilds(dir, {
      kernelPackage: "linux-image-6.1.0-56-amd64",
      keep: "none",
    });
    assert.deepEqual(removed, ["linux-image-6.1.0-56-amd64-0123456789abcdef"]);
  });
});

Deno.test("pruneRuns keeps the newest runs and any run whose VM is still up", async () => {
  await withDir(async (dir) => {
    const runs = [
      "20260101-000000-a",
      "20260102-000000-b",
      "20260103-000000-c",
      "20260104-000000-d",
    ];
    for (const run of runs) await Deno.mkdir(`${dir}/${run}`);
    await Deno.writeTextFile(`${dir}/${runs[0]}/qemu.pid`, `${Deno.pid}\n`);
    assert.deepEqual(await pruneRuns(dir, 2), [runs[1]]);
    assert.deepEqual(await pruneRuns(`${dir}/missing`, 2), []);
  });
});
