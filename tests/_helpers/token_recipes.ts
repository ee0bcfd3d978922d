/**
 * The README's recipes that check an image's change tokens over NBD before
 * trusting its dirty bitmap (one for sh with nbdinfo, one in Python for
 * nbdsh), read from README.md and run as written, so the tests of both
 * backends run the very text users copy.
 *
 * @module
 */

import assert from "node:assert/strict";
import { runTool } from "./nbd_fixture.ts";

/** The README's two recipes: `nbdinfo` (sh) and `nbdsh` (Python). */
export function readmeRecipes(readme: string): { nbdinfo: string; nbdsh: string } {
  const found =
    /Check the CBT before trusting[\s\S]*?```sh\n([\s\S]*?)```[\s\S]*?```python\n([\s\S]*?)```/
      .exec(readme);
  assert.ok(found, "README.md has the two NBD token recipes");
  return { nbdinfo: found[1], nbdsh: found[2] };
}

/** Where README.md is: beside tests/ here; the lab copies it into the run's input folder. */
function readmePath(): string | URL {
  const labIn = Deno.env.get("LAB_IN");
  return labIn ? `${labIn}/README.md` : new URL("../../README.md", import.meta.url);
}

/**
 * Runs recipe `tool` of README.md with `env` (IMAGE, KEPT); its standard
 * output, asserting it succeeded.
 */
export async function runRecipe(
  tool: "nbdinfo" | "nbdsh",
  env: Record<string, string>,
): Promise<string> {
  const script = readmeRecipes(await Deno.readTextFile(readmePath()))[tool];
  const result = tool === "nbdsh"
    ? await runTool("/usr/bin/nbdsh", ["-c", script], { env })
    : await runTool("sh", ["-c", script], { env });
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

/**
 * The dirty byte ranges a recipe printed, one "offset length" per line:
 * nbdsh prints them so, nbdinfo prints its map ("offset length 1 dirty").
 */
export function dirtyRanges(tool: "nbdinfo" | "nbdsh", output: string): string {
  if (tool === "nbdsh") return output.trim();
  return output.trim().split("\n").map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[2] === "1").map(([offset, length]) => `${offset} ${length}`)
    .join("\n");
}
