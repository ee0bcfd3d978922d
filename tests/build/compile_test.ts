import assert from "node:assert/strict";
import {
  denortUrl,
  hostTarget,
  missingDenortMessage,
  parseCompileArgs,
} from "../../src/build/compile.ts";
import { isServiceError } from "../../src/errors.ts";

const compileScript = new URL("../../src/build/compile.ts", import.meta.url).pathname;

async function compile(dir: string, denortBin?: string) {
  const env: Record<string, string> = { NO_COLOR: "1" };
  if (denortBin !== undefined) env.DENORT_BIN = denortBin;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", compileScript, "--entry", `${dir}/hello.ts`, "--out", `${dir}/hello`],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
}

async function withEntry(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/hello.ts`, 'console.log("compiled", Deno.args.join("+"));\n');
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("compile without DENORT_BIN builds a working binary or names the missing denort", async () => {
  await withEntry(async (dir) => {
    const result = await compile(dir);
    if (result.code === 0) {
      const ran = await new Deno.Command(`${dir}/hello`, { args: ["a", "b"] }).output();
      assert.equal(new TextDecoder().decode(ran.stdout).trim(), "compiled a+b");
    } else {
      console.log("compile: no denort here; checking the message instead");
      assert.equal(result.code, 1);
      assert.ok(result.stderr.includes(denortUrl()), result.stderr);
      assert.match(result.stderr, /DENORT_BIN=\/path\/to\/denort/);
      assert.match(result.stderr, /npm does not publish denort/);
    }
  });
});

Deno.test("compile refuses a DENORT_BIN that does not exist or is not executable", async () => {
  await withEntry(async (dir) => {
    const missing = await compile(dir, `${dir}/no-such-denort`);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /DENORT_BIN=.*no-such-denort: the file does not exist/);
    await Deno.writeTextFile(`${dir}/plain`, "not a program");
    const plain = await compile(dir, `${dir}/plain`);
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /DENORT_BIN=.*plain: it is not an executable file/);
  });
});

Deno.test("compile refuses the full deno CLI as DENORT_BIN (its binaries ignore the program)", async () => {
  await withEntry(async (dir) => {
    const result = await compile(dir, Deno.execPath());
    assert.equal(result.code, 1);
    assert.match(result.stderr, /it is the full deno CLI, not denort/);
    await assert.rejects(Deno.stat(`${dir}/hello`));
  });
});

Deno.test("compile hands DENORT_BIN to deno compile, which reads it as the base binary", async () => {
  await withEntry(async (dir) => {
    // An executable that is not deno: it passes the checks, and deno compile then parses it.
    await Deno.writeTextFile(`${dir}/fake-denort`, "#!/bin/sh\nexit 1\n");
    await Deno.chmod(`${dir}/fake-denort`, 0o755);
    const result = await compile(dir, `${dir}/fake-denort`);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /deno compile failed/);
    assert.match(result.stderr, /Not an ELF file/);
  });
});

Deno.test("parseCompileArgs defaults to the CLI entry and dist/blksnapctl", () => {
  assert.deepEqual(parseCompileArgs([]), {
    entry: "src/cli/main.ts",
    out: "dist/blksnapctl",
    help: false,
  });
  assert.equal(parseCompileArgs(["--out", "bin/x"]).out, "bin/x");
  assert.throws(
    () => parseCompileArgs(["--target", "x"]),
    (e) => isServiceError(e, "INVALID_ARGUMENT"),
  );
});

Deno.test("the denort message names the release file for this deno and machine", () => {
  assert.equal(
    denortUrl("2.9.6", "x86_64-unknown-linux-gnu"),
    "https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip",
  );
  if (Deno.build.os === "linux") assert.equal(hostTarget(), `${Deno.build.arch}-unknown-linux-gnu`);
  const message = missingDenortMessage({ version: "2.9.6", failure: "dns error" });
  assert.match(message, /denort 2\.9\.6/);
  assert.match(message, /that download failed \(dns error\)/);
});
