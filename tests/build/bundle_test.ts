import assert from "node:assert/strict";
import { parseBundleArgs } from "../../src/build/bundle.ts";
import { isServiceError } from "../../src/errors.ts";

const bundleScript = new URL("../../src/build/bundle.ts", import.meta.url).pathname;

async function deno(args: string[], cwd?: string) {
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

const entry = `
import ky from "ky";
import { Hono } from "hono";
import { cors } from "hono/cors";
import { basename } from "node:path";
import { shout } from "./shout.ts";

const app = new Hono();
app.use(cors());
app.get("/hello", (c) => c.text("hello from hono"));
const response = await app.request("/hello");
console.log(shout(basename("/a/b/bundled.txt")), await response.text(), typeof ky.get, Deno.args.join(","));
`;

Deno.test("the bundle runs with deno run alone: npm deps inlined, node builtins external", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/entry.ts`, entry);
    await Deno.writeTextFile(
      `${dir}/shout.ts`,
      "export function shout(text: string): string { return text.toUpperCase(); }\n",
    );
    const out = `${dir}/dist/app.js`;
    const built = await deno([
      "run",
      "-A",
      bundleScript,
      "--entry",
      `${dir}/entry.ts`,
      "--out",
      out,
    ]);
    assert.equal(built.code, 0, built.stderr);
    assert.match(built.stdout, /bundle: wrote .*app\.js/);

    // Run it from a folder with no deno.json and no node_modules: nothing left to resolve.
    const runDir = await Deno.makeTempDir({ dir });
    await Deno.copyFile(out, `${runDir}/app.js`);
    const ran = await deno(["run", "--no-config", "-A", "app.js", "x", "y"], runDir);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout.trim(), "BUNDLED.TXT hello from hono function x,y");

    const text = await Deno.readTextFile(out);
    const imports = [...text.matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => m[1]);
    assert.deepEqual([...new Set(imports)].sort(), ["node:module", "node:path"]);
    assert.ok(
      !text.includes("blksnap-node-modules-"),
      "the temporary folder leaked into the bundle",
    );

    // Same inputs, same bytes (the lab keys its image cache on the bundle).
    const again = await deno([
      "run",
      "-A",
      bundleScript,
      "--entry",
      `${dir}/entry.ts`,
      "--out",
      `${out}.2`,
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await Deno.readTextFile(`${out}.2`), text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bundle reports a missing entry with exit status 1 and a usage error with 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = await deno([
      "run",
      "-A",
      bundleScript,
      "--entry",
      `${dir}/nope.ts`,
      "--out",
      `${dir}/x.js`,
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Cannot bundle .*nope\.ts: the file does not exist/);
    const usage = await deno(["run", "-A", bundleScript, "--frobnicate"]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /Usage: deno task bundle/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bundle names the file and line of an unresolvable import", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/entry.ts`, 'import "./absent.ts";\n');
    const result = await deno([
      "run",
      "-A",
      bundleScript,
      "--entry",
      `${dir}/entry.ts`,
      "--out",
      `${dir}/x.js`,
    ]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /entry\.ts:1: Could not resolve "\.\/absent\.ts"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseBundleArgs defaults to the CLI entry and dist/blksnapctl.js", () => {
  assert.deepEqual(parseBundleArgs([]), {
    entry: "src/cli/main.ts",
    out: "dist/blksnapctl.js",
    sourcemap: false,
    help: false,
  });
  assert.deepEqual(parseBundleArgs(["--entry=a.ts", "--out", "b.js", "--sourcemap"]), {
    entry: "a.ts",
    out: "b.js",
    sourcemap: true,
    help: false,
  });
  assert.throws(() => parseBundleArgs(["extra"]), (e) => isServiceError(e, "INVALID_ARGUMENT"));
});
