import assert from "node:assert/strict";
import {
  cacheKey,
  changedInputs,
  digestTree,
  previousInputs,
  sha256Hex,
} from "../../lab/cache_key.ts";

Deno.test("sha256Hex matches the published digest of 'abc'", async () => {
  assert.equal(
    await sha256Hex("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("cacheKey ignores the order of inputs and changes with any value", async () => {
  const a = await cacheKey({ kernel: "linux-image-amd64", deno: "2.9.6" });
  assert.equal(a, await cacheKey({ deno: "2.9.6", kernel: "linux-image-amd64" }));
  assert.notEqual(a, await cacheKey({ deno: "2.9.7", kernel: "linux-image-amd64" }));
  assert.notEqual(a, await cacheKey({ deno: "2.9.6", kernel: "linux-image-cloud-amd64" }));
  assert.notEqual(a, await cacheKey({ deno: "2.9.6" }));
});

Deno.test("cacheKey cannot be fooled by moving text between a name and its value", async () => {
  assert.notEqual(await cacheKey({ "a": "b=c" }), await cacheKey({ "a=b": "c" }));
});

Deno.test("digestTree sees content, new files, executability and links", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/sub`);
    await Deno.writeTextFile(`${dir}/a.sh`, "echo a\n");
    await Deno.writeTextFile(`${dir}/sub/b.conf`, "b\n");
    const first = await digestTree(dir, "packer/");
    assert.deepEqual(Object.keys(first), ["packer/a.sh", "packer/sub/b.conf"]);
    assert.deepEqual(await digestTree(dir, "packer/"), first);

    await Deno.chmod(`${dir}/a.sh`, 0o755);
    const executable = await digestTree(dir, "packer/");
    assert.deepEqual(changedInputs(first, executable), ["packer/a.sh"]);

    await Deno.writeTextFile(`${dir}/sub/b.conf`, "b changed\n");
    await Deno.symlink("a.sh", `${dir}/link`);
    const changed = await digestTree(dir, "packer/");
    assert.deepEqual(changedInputs(executable, changed), ["packer/link", "packer/sub/b.conf"]);
    assert.equal(changed["packer/link"], "link:a.sh");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("changedInputs lists added, removed and changed names", () => {
  assert.deepEqual(changedInputs({ a: "1", b: "2", c: "3" }, { a: "1", b: "9", d: "4" }), [
    "b",
    "c",
    "d",
  ]);
});

Deno.test("previousInputs reads the newest finished build of the same kernel package", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const write = async (name: string, inputs: Record<string, string>, mtime: Date) => {
      await Deno.mkdir(`${dir}/${name}`);
      await Deno.writeTextFile(`${dir}/${name}/manifest.json`, JSON.stringify({ inputs }));
      await Deno.utime(`${dir}/${name}/manifest.json`, mtime, mtime);
    };
    assert.equal(await previousInputs(dir, "linux-image-amd64"), undefined);
    await write("linux-image-amd64-0000000000000001", { v: "old" }, new Date(1000));
    await write("linux-image-amd64-0000000000000002", { v: "new" }, new Date(2000));
    await write("linux-image-cloud-amd64-0000000000000003", { v: "cloud" }, new Date(3000));
    await Deno.mkdir(`${dir}/linux-image-amd64-0000000000000004.partial-1`);
    assert.deepEqual(await previousInputs(dir, "linux-image-amd64"), { v: "new" });
    assert.deepEqual(await previousInputs(dir, "linux-image-cloud-amd64"), { v: "cloud" });
    assert.equal(await previousInputs(`${dir}/missing`, "linux-image-amd64"), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
