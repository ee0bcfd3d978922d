import assert from "node:assert/strict";
import { tokensMatch } from "../../src/api/auth.ts";

Deno.test("tokensMatch() compares whole tokens of any length", () => {
  assert.equal(tokensMatch("s3cret", "s3cret"), true);
  assert.equal(tokensMatch("s3cret", "s3cre"), false);
  assert.equal(tokensMatch("", "s3cret"), false);
  assert.equal(tokensMatch("s3cret-and-more", "s3cret"), false);
});
