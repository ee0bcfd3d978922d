import assert from "node:assert/strict";
import { join } from "node:path";
import { isServiceError } from "../../src/errors.ts";
import { PathPolicy } from "../../src/api/path_policy.ts";

async function withDirs(run: (allowed: string, outside: string) => Promise<void>) {
  const root = await Deno.makeTempDir();
  const allowed = join(root, "allowed");
  const outside = join(root, "outside");
  await Deno.mkdir(allowed);
  await Deno.mkdir(outside);
  try {
    await run(allowed, outside);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

async function codeOf(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
  } catch (error) {
    assert.ok(isServiceError(error), String(error));
    return error.code;
  }
  return "accepted";
}

const device = { field: "path", purpose: "attach", mustExist: true };
const storage = {
  field: "diffStorage.path",
  purpose: "use as difference storage",
  mustExist: false,
};

Deno.test("PathPolicy accepts real paths under a prefix and refuses others", async () => {
  await withDirs(async (allowed, outside) => {
    await Deno.writeFile(join(allowed, "disk.img"), new Uint8Array(1));
    await Deno.writeFile(join(outside, "disk.img"), new Uint8Array(1));
    const policy = await PathPolicy.create([allowed]);
    assert.equal(
      await policy.resolve(join(allowed, "disk.img"), device),
      join(allowed, "disk.img"),
    );
    assert.equal(
      await codeOf(() => policy.resolve(join(outside, "disk.img"), device)),
      "FORBIDDEN",
    );
    assert.equal(await codeOf(() => policy.resolve("disk.img", device)), "INVALID_ARGUMENT");
    assert.equal(
      await codeOf(() => policy.resolve(join(allowed, "missing.img"), device)),
      "NOT_FOUND",
    );
  });
});

Deno.test("PathPolicy resolves '..' and symlinks before checking", async () => {
  await withDirs(async (allowed, outside) => {
    await Deno.writeFile(join(outside, "secret.img"), new Uint8Array(1));
    await Deno.symlink(join(outside, "secret.img"), join(allowed, "link.img"));
    await Deno.symlink(outside, join(allowed, "escape"));
    const policy = await PathPolicy.create([allowed]);
    assert.equal(
      await codeOf(() => policy.resolve(join(allowed, "..", "outside", "secret.img"), device)),
      "FORBIDDEN",
    );
    assert.equal(
      await codeOf(() => policy.resolve(join(allowed, "link.img"), device)),
      "FORBIDDEN",
    );
    assert.equal(
      await codeOf(() => policy.resolve(join(allowed, "escape", "new.diff"), storage)),
      "FORBIDDEN",
    );
  });
});

Deno.test("PathPolicy lets storage files be created under a prefix, not beside it", async () => {
  await withDirs(async (allowed) => {
    const policy = await PathPolicy.create([allowed]);
    assert.equal(
      await policy.resolve(join(allowed, "new.diff"), storage),
      join(allowed, "new.diff"),
    );
    assert.equal(
      await codeOf(() => policy.resolve(`${allowed}-sibling/x.diff`, storage)),
      "FORBIDDEN",
      "outside the prefixes, missing or not: 403",
    );
    assert.equal(
      await codeOf(() => policy.resolve(join(allowed, "no-dir", "x.diff"), storage)),
      "NOT_FOUND",
    );
    const prefixSibling = `${allowed}2`;
    await Deno.mkdir(prefixSibling);
    assert.equal(
      await codeOf(() => policy.resolve(join(prefixSibling, "x.diff"), storage)),
      "FORBIDDEN",
    );
  });
});

Deno.test("PathPolicy refuses paths that do not resolve because of what they name", async () => {
  await withDirs(async (allowed) => {
    await Deno.writeFile(join(allowed, "disk.img"), new Uint8Array(1));
    await Deno.symlink(join(allowed, "b"), join(allowed, "a"));
    await Deno.symlink(join(allowed, "a"), join(allowed, "b"));
    const policy = await PathPolicy.create([allowed]);
    const errnoOf = async (path: string, options: typeof device) => {
      try {
        await policy.resolve(path, options);
      } catch (error) {
        assert.ok(isServiceError(error, "INVALID_ARGUMENT"), String(error));
        assert.equal(error.field, options.field);
        return error.errno;
      }
      assert.fail(`${path} was accepted`);
    };
    assert.equal(await errnoOf(join(allowed, "disk.img", "x"), device), "ENOTDIR");
    assert.equal(await errnoOf(join(allowed, "disk.img", "x"), storage), "ENOTDIR");
    assert.equal(await errnoOf(join(allowed, "a"), device), "ELOOP");
    assert.equal(await errnoOf(join(allowed, "a", "new.diff"), storage), "ELOOP");
    assert.equal(await errnoOf(join(allowed, "n".repeat(256)), device), "ENAMETOOLONG");
    assert.equal(await errnoOf(join(allowed, "n".repeat(256)), storage), "ENAMETOOLONG");
    assert.equal(await errnoOf(join(allowed, "nul\0.img"), device), "EINVAL");
  });
});
