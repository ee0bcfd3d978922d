import assert from "node:assert/strict";
import { cacheKey, changedInputs, digestTree, sha256Hex } from "../../lab/cache_key.ts";

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
