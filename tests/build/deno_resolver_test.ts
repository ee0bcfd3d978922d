import assert from "node:assert/strict";
import { resolveSpecifier } from "../../src/build/deno_resolver.ts";
import { isServiceError } from "../../src/errors.ts";

const map = {
  baseDir: "/repo",
  imports: {
    "ky": "npm:ky@2.1.0",
    "hono": "npm:hono@4.13.19",
    "hono/": "npm:/hono@4.13.19/",
    "@scope/pkg": "npm:@scope/pkg@^1.2.0",
    "@scope/pkg/": "npm:/@scope/pkg@^1.2.0/",
    "local/": "./src/local/",
    "remote": "https://example.invalid/mod.ts",
  },
};

Deno.test("resolveSpecifier maps import-map npm entries to node_modules paths", () => {
  assert.deepEqual(resolveSpecifier("ky", map), { kind: "npm", path: "ky" });
  assert.deepEqual(resolveSpecifier("hono/cors", map), { kind: "npm", path: "hono/cors" });
  assert.deepEqual(resolveSpecifier("hono/utils/mime", map), {
    kind: "npm",
    path: "hono/utils/mime",
  });
  assert.deepEqual(resolveSpecifier("@scope/pkg", map), { kind: "npm", path: "@scope/pkg" });
  assert.deepEqual(resolveSpecifier("@scope/pkg/sub", map), {
    kind: "npm",
    path: "@scope/pkg/sub",
  });
});

Deno.test("resolveSpecifier reads inline npm: specifiers with and without versions", () => {
  assert.deepEqual(resolveSpecifier("npm:ky@2.1.0", map), { kind: "npm", path: "ky" });
  assert.deepEqual(resolveSpecifier("npm:hono", map), { kind: "npm", path: "hono" });
  assert.deepEqual(resolveSpecifier("npm:@scope/pkg@1/deep/file.js", map), {
    kind: "npm",
    path: "@scope/pkg/deep/file.js",
  });
});

Deno.test("resolveSpecifier: node builtins stay external, local prefixes become files", () => {
  assert.deepEqual(resolveSpecifier("node:fs", map), { kind: "node", path: "node:fs" });
  assert.deepEqual(resolveSpecifier("local/x.ts", map), {
    kind: "file",
    path: "/repo/src/local/x.ts",
  });
  assert.deepEqual(resolveSpecifier("fs", map), { kind: "unchanged", path: "fs" });
});

Deno.test("resolveSpecifier refuses what a bundle cannot inline", () => {
  assert.throws(() => resolveSpecifier("remote", map), (e) => isServiceError(e, "NOT_SUPPORTED"));
  assert.throws(
    () => resolveSpecifier("jsr:@std/assert", map),
    (e) => isServiceError(e, "NOT_SUPPORTED") && /jsr:@std\/assert/.test(e.message),
  );
});
