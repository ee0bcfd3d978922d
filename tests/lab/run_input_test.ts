import assert from "node:assert/strict";
import {
  copyKernelHeaders,
  copyKernelModules,
  copyModuleObjects,
  copyModuleSource,
  isBuildProduct,
  listTestFiles,
  prepareRunInput,
  renderEnv,
  selectTests,
  shellQuote,
} from "../../lab/run_input.ts";
import { isServiceError } from "../../src/errors.ts";

Deno.test("selectTests: --only matches file paths first, else becomes a name filter", () => {
  const files = ["kernel/cbt_test.ts", "module_test.ts", "nbd_client_test.ts"];
  assert.deepEqual(selectTests(files), { files });
  assert.deepEqual(selectTests(files, "nbd"), { files: ["nbd_client_test.ts"] });
  assert.deepEqual(selectTests(files, "kernel/"), { files: ["kernel/cbt_test.ts"] });
  assert.deepEqual(selectTests(files, "unloads"), { files, filter: "unloads" });
});

Deno.test("listTestFiles finds *_test.ts in subfolders and skips helper folders", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/_helpers`);
    await Deno.mkdir(`${dir}/kernel`);
    for (
      const file of ["b_test.ts", "a_test.ts", "kernel/c_test.ts", "_helpers/h_test.ts", "x.ts"]
    ) {
      await Deno.writeTextFile(`${dir}/${file}`, "");
    }
    assert.deepEqual(await listTestFiles(dir), ["a_test.ts", "b_test.ts", "kernel/c_test.ts"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("renderEnv output, sourced by sh, gives back the exact values", async () => {
  const settings = { LAB_FILTER: `it's "quoted" $HOME \`x\` \\ ;`, LAB_KERNEL_PACKAGE: "linux" };
  const script = renderEnv(settings) + 'printf "%s\\n%s" "$LAB_FILTER" "$LAB_KERNEL_PACKAGE"';
  const output = await new Deno.Command("sh", { args: ["-c", script] }).output();
  assert.equal(new TextDecoder().decode(output.stdout), `${settings.LAB_FILTER}\nlinux`);
  assert.equal(shellQuote("a'b"), `'a'\\''b'`);
  assert.throws(() => renderEnv({ "BAD NAME": "x" }), (e) => isServiceError(e, "INVALID_ARGUMENT"));
});

Deno.test("copyModuleSource copies sources without kbuild products", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const src = `${dir}/src`;
    await Deno.mkdir(`${src}/sub`, { recursive: true });
    for (
      const file of [
        "Makefile",
        "a.c",
        "a.h",
        "sub/b.c",
        "a.o",
        "a.ko",
        ".a.o.cmd",
        "modules.order",
        "Module.symvers",
        "a.mod.c",
      ]
    ) {
      await Deno.writeTextFile(`${src}/${file}`, file);
    }
    assert.equal(await copyModuleSource(src, `${dir}/copy`), 4);
    assert.deepEqual(await listNames(`${dir}/copy`), ["Makefile", "a.c", "a.h", "sub", "sub/b.c"]);
    assert.ok(isBuildProduct(".git") && !isBuildProduct("Kbuild"));
    await Deno.remove(`${src}/Makefile`);
    await assert.rejects(
      copyModuleSource(src, `${dir}/again`),
      (e) => isServiceError(e, "NOT_FOUND"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("copyModuleObjects takes the .ko files and refuses a folder without any", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/ko`);
    for (const file of ["veeamblksnap.ko", "bdevfilter.ko", "README"]) {
      await Deno.writeTextFile(`${dir}/ko/${file}`, file);
    }
    assert.deepEqual(await copyModuleObjects(`${dir}/ko`, `${dir}/copy`), [
      "bdevfilter.ko",
      "veeamblksnap.ko",
    ]);
    await assert.rejects(copyModuleObjects(dir, `${dir}/x`), (e) => isServiceError(e, "NOT_FOUND"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("prepareRunInput packs runner, settings, bundled tests and module input", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const e2e = `${dir}/e2e`;
    await Deno.mkdir(`${e2e}/_helpers`, { recursive: true });
    await Deno.mkdir(`${e2e}/kernel`);
    await Deno.writeTextFile(`${e2e}/_helpers/h.ts`, "export const word: string = 'inlined';\n");
    await Deno.writeTextFile(
      `${e2e}/kernel/k_test.ts`,
      "import { word } from '../_helpers/h.ts';\nDeno.test(word, () => {});\n",
    );
    await Deno.writeTextFile(`${dir}/run.sh`, "#!/bin/sh\n");
    await Deno.mkdir(`${dir}/module`);
    await Deno.writeTextFile(`${dir}/module/Makefile`, "obj-m := x.o\n");
    const bundled = await prepareRunInput(`${dir}/in`, `${dir}/in.tar`, {
      e2eDir: e2e,
      runnerScript: `${dir}/run.sh`,
      selection: { files: ["kernel/k_test.ts"], filter: "inl" },
      kernelPackage: "linux-image-amd64",
      moduleSrc: `${dir}/module`,
    });
    assert.deepEqual(bundled, ["tests/kernel/k_test.js"]);
    const listing = await new Deno.Command("tar", { args: ["-tf", `${dir}/in.tar`] }).output();
    const names = new TextDecoder().decode(listing.stdout).split("\n").filter(Boolean).sort();
    for (
      const name of ["./run.sh", "./lab.env", "./tests/kernel/k_test.js", "./module-src/Makefile"]
    ) {
      assert.ok(names.includes(name), `${name} missing from ${names}`);
    }
    assert.match(await Deno.readTextFile(`${dir}/in/lab.env`), /LAB_FILTER='inl'/);
    // The bundle runs on its own: helper inlined, no import left to resolve.
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--no-config", "-A", `${dir}/in/tests/kernel/k_test.js`],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.match(new TextDecoder().decode(run.stdout), /inlined \.\.\. ok/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function listNames(dir: string, prefix = ""): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    names.push(prefix + entry.name);
    if (entry.isDirectory) {
      names.push(...await listNames(`${dir}/${entry.name}`, `${prefix}${entry.name}/`));
    }
  }
  return names.sort();
}

Deno.test("a custom kernel's modules and kbuild tree go into the run without host links or objects", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const modules = `${dir}/lib/modules/6.12.117`;
    await Deno.mkdir(`${modules}/kernel/drivers/block`, { recursive: true });
    await Deno.writeTextFile(`${modules}/modules.order`, "kernel/drivers/block/blksnap.ko\n");
    await Deno.writeTextFile(`${modules}/kernel/drivers/block/blksnap.ko`, "ko");
    await Deno.symlink("/work/kernel/build-tree", `${modules}/build`);
    const tree = `${dir}/build`;
    await Deno.mkdir(`${tree}/include/config`, { recursive: true });
    await Deno.mkdir(`${tree}/scripts/mod`, { recursive: true });
    await Deno.writeTextFile(`${tree}/Makefile`, "all:\n");
    await Deno.writeTextFile(`${tree}/include/config/auto.conf`, "CONFIG_BLKSNAP=m\n");
    await Deno.writeTextFile(`${tree}/Module.symvers`, "");
    await Deno.writeTextFile(`${tree}/scripts/mod/modpost`, "binary");
    await Deno.writeTextFile(`${tree}/scripts/mod/modpost.o`, "object");
    await Deno.writeTextFile(`${tree}/vmlinux`, "image");
    await Deno.writeTextFile(`${dir}/run.sh`, "#!/bin/sh\n");
    await Deno.mkdir(`${dir}/e2e`);
    await prepareRunInput(`${dir}/in`, `${dir}/in.tar`, {
      e2eDir: `${dir}/e2e`,
      runnerScript: `${dir}/run.sh`,
      selection: { files: [] },
      kernelPackage: "linux-image-amd64",
      kernelRelease: "6.12.117",
      kernelModules: modules,
      kernelHeaders: tree,
    });
    assert.deepEqual(await listNames(`${dir}/in/kernel-modules`), [
      "kernel",
      "kernel/drivers",
      "kernel/drivers/block",
      "kernel/drivers/block/blksnap.ko",
      "modules.order",
    ]);
    assert.deepEqual(await listNames(`${dir}/in/kernel-headers`), [
      "Makefile",
      "Module.symvers",
      "include",
      "include/config",
      "include/config/auto.conf",
      "scripts",
      "scripts/mod",
      "scripts/mod/modpost",
    ]);
    assert.match(await Deno.readTextFile(`${dir}/in/lab.env`), /LAB_KERNEL_IMAGE='6\.12\.117'/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("custom kernel inputs are checked: module folder of the release, configured kbuild tree", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/6.1.0-57-amd64`);
    await Deno.writeTextFile(`${dir}/6.1.0-57-amd64/modules.builtin`, "");
    await assert.rejects(
      copyKernelModules(`${dir}/6.1.0-57-amd64`, `${dir}/out`, { release: "6.12.117" }),
      (error) =>
        isServiceError(error, "INVALID_ARGUMENT") && /release 6\.12\.117/.test(error.message),
    );
    await assert.rejects(
      copyKernelModules(dir, `${dir}/out`, { release: "6.12.117" }),
      (error) => isServiceError(error, "NOT_FOUND") && /modules\.order/.test(error.message),
    );
    await assert.rejects(
      copyKernelHeaders(`${dir}/6.1.0-57-amd64`, `${dir}/out2`),
      (error) => isServiceError(error, "NOT_FOUND") && /Makefile/.test(error.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
