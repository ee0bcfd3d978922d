/**
 * An esbuild plugin that resolves imports the way Deno does for this project: bare specifiers
 * through deno.json's import map (exact keys and "/" prefixes), `npm:` specifiers to the packages
 * in a prepared node_modules folder, `node:` builtins left external (the Deno runtime provides
 * them). Imports made by npm packages themselves fall through to esbuild's Node resolution.
 *
 * @module
 */

import type * as esbuild from "esbuild";
import { ServiceError } from "../errors.ts";
import type { ImportMap } from "./node_modules.ts";

/** Where a specifier points after the import map: an npm package path or a file path. */
export type ResolvedSpecifier =
  | { readonly kind: "npm"; readonly path: string }
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "node"; readonly path: string }
  | { readonly kind: "unchanged"; readonly path: string };

/**
 * Applies `map` to `specifier` and classifies the result: `npm:name@1.2.3/sub` becomes the
 * node_modules path `name/sub`, a target relative to deno.json becomes an absolute file path.
 *
 * @throws {ServiceError} NOT_SUPPORTED for targets a bundle cannot inline (jsr:, http(s):).
 */
export function resolveSpecifier(specifier: string, map: ImportMap): ResolvedSpecifier {
  if (specifier.startsWith("node:")) return { kind: "node", path: specifier };
  let target = map.imports[specifier];
  if (target === undefined) {
    const prefix = Object.keys(map.imports)
      .filter((key) => key.endsWith("/") && specifier.startsWith(key))
      .sort((a, b) => b.length - a.length)[0];
    if (prefix !== undefined) target = map.imports[prefix] + specifier.slice(prefix.length);
  }
  target ??= specifier;
  if (target.startsWith("npm:")) return { kind: "npm", path: npmPath(target) };
  if (target.startsWith("./") || target.startsWith("../")) {
    return { kind: "file", path: new URL(target, `file://${map.baseDir}/`).pathname };
  }
  if (target.startsWith("file://")) return { kind: "file", path: new URL(target).pathname };
  if (/^(jsr|https?):/.test(target)) {
    throw new ServiceError(
      "NOT_SUPPORTED",
      `Cannot bundle the import ${specifier}: ${target} is neither an npm package nor a file`,
    );
  }
  return { kind: "unchanged", path: target };
}

/** `npm:name@range/sub` or `npm:/@scope/name@range/sub` to the node_modules path `name/sub`. */
function npmPath(target: string): string {
  const rest = target.slice("npm:".length).replace(/^\//, "");
  const scoped = rest.startsWith("@");
  const parts = rest.split("/");
  const nameParts = scoped ? parts.slice(0, 2) : parts.slice(0, 1);
  const subPath = parts.slice(nameParts.length).filter((part) => part !== "");
  const last = nameParts.length - 1;
  const at = nameParts[last].indexOf("@", scoped && last === 0 ? 1 : 0);
  if (at > 0) nameParts[last] = nameParts[last].slice(0, at);
  return [...nameParts, ...subPath].join("/");
}

/**
 * The esbuild plugin: resolves with `map`, looks npm packages up in `nodeModulesDir`.
 */
export function denoResolver(map: ImportMap, nodeModulesDir: string): esbuild.Plugin {
  const guard = Symbol("deno-resolver");
  const packagesParent = nodeModulesDir.replace(/\/node_modules\/?$/, "");
  return {
    name: "deno-resolver",
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.pluginData === guard) return undefined;
        if (args.importer.includes("/node_modules/") && !args.path.startsWith("npm:")) {
          return undefined;
        }
        let resolved: ResolvedSpecifier;
        try {
          resolved = resolveSpecifier(args.path, map);
        } catch (error) {
          return { errors: [{ text: (error as Error).message }] };
        }
        switch (resolved.kind) {
          case "node":
            return { path: resolved.path, external: true };
          case "file":
            return { path: resolved.path };
          case "npm":
            return await build.resolve(resolved.path, {
              kind: args.kind,
              resolveDir: packagesParent,
              importer: args.importer,
              pluginData: guard,
            });
          case "unchanged":
            return undefined;
        }
      });
    },
  };
}
