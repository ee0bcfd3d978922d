import assert from "node:assert/strict";
import { join } from "node:path";
import { isServiceError, ServiceError } from "../../src/errors.ts";
import { openVerified } from "../../src/store/open_verified.ts";

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "open-verified-" }));
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const forbidOutside = (prefix: string) => (real: string) => {
  if (!real.startsWith(`${prefix}/`)) throw new ServiceError("FORBIDDEN", `outside: ${real}`);
};

Deno.test("openVerified() refuses a symlink at the last component, even one pointing inside", async () => {
  await withDir(async (dir) => {
    await Deno.writeFile(join(dir, "real"), new Uint8Array(10));
    await Deno.symlink(join(dir, "real"), join(dir, "link"));
    await assert.rejects(
      openVerified(join(dir, "link"), { create: true }),
      (e) => isServiceError(e, "INVALID_ARGUMENT") && /symbolic link/.test(e.message),
    );
    assert.equal((await Deno.stat(join(dir, "real"))).size, 10);
  });
});

Deno.test("openVerified() judges the real path of what it opened: a symlinked folder outside is FORBIDDEN", async () => {
  await withDir(async (dir) => {
    const inside = join(dir, "inside");
    const outside = join(dir, "outside");
    await Deno.mkdir(inside);
    await Deno.mkdir(outside);
    await Deno.writeFile(join(outside, "disk"), new Uint8Array(10));
    await Deno.symlink(outside, join(inside, "folder"));
    const verify = forbidOutside(inside);
    await assert.rejects(
      openVerified(join(inside, "folder", "disk"), { verify }),
      (e) => isServiceError(e, "FORBIDDEN"),
    );
    await assert.rejects(
      openVerified(join(inside, "folder", "new"), { create: true, verify }),
      (e) => isServiceError(e, "FORBIDDEN"),
    );
    assert.deepEqual(
      [...Deno.readDirSync(outside)].map((e) => e.name),
      ["disk"],
      "nothing created",
    );
  });
});

Deno.test("openVerified() creates exclusively and hands out /proc/self/fd paths to the same object", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "new");
    const opened = await openVerified(path, { create: true });
    try {
      assert.equal(opened.created, true);
      assert.equal(opened.realPath, path);
      assert.equal(await Deno.realPath(opened.procPath), path);
      const again = await openVerified(path, { create: true });
      assert.equal(again.created, false, "an existing file is opened, not created");
      await again.handle.close();
      await opened.createdIn!.remove();
      await assert.rejects(Deno.stat(path), Deno.errors.NotFound, "removed again");
    } finally {
      await opened.handle.close();
    }
  });
});

Deno.test("CreatedFile.remove() removes from the folder it was created in, whatever the folder is called now", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(join(dir, "a"));
    const opened = await openVerified(join(dir, "a", "s.diff"), { create: true });
    await opened.handle.close();
    await Deno.rename(join(dir, "a"), join(dir, "b"));
    await Deno.mkdir(join(dir, "a"));
    await Deno.writeFile(join(dir, "a", "s.diff"), new Uint8Array(3));
    await opened.createdIn!.remove();
    assert.equal((await Deno.stat(join(dir, "a", "s.diff"))).size, 3, "the other file stays");
    await assert.rejects(Deno.stat(join(dir, "b", "s.diff")), Deno.errors.NotFound);
  });
});

Deno.test("openVerified() gives a directory an unnamed file and refuses other file types", async () => {
  await withDir(async (dir) => {
    const unnamed = await openVerified(dir, { directoryFile: true });
    assert.equal(unnamed.kind, "directory-file");
    await unnamed.handle.close();
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    await assert.rejects(openVerified(dir), (e) => isServiceError(e, "INVALID_ARGUMENT"));
    const fifo = join(dir, "fifo");
    await new Deno.Command("mkfifo", { args: [fifo] }).output();
    await assert.rejects(openVerified(fifo), (e) => isServiceError(e, "INVALID_ARGUMENT"));
  });
});
