import assert from "node:assert/strict";

const REPO = new URL("../..", import.meta.url).pathname;

Deno.test("deno publish --dry-run passes: a license, docs and types fit for JSR", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, text);
  assert.match(text, /Dry run complete/);
  // The listing names files by URL; relative to the repository, so that a checkout whose own
  // path holds "lab/" or "tests/" does not count.
  const listed = text.replaceAll(`file://${REPO}`, "");
  assert.match(listed, /^\s*LICENSE\b/m, "the license file is in the package");
  assert.doesNotMatch(listed, /^\s*(tests|lab)\//m, "tests and the lab stay out of the package");
});
