import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import {
  array,
  boolean,
  integer,
  literal,
  object,
  optional,
  string,
} from "../../src/api/schema.ts";

function fieldOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    assert.ok(isServiceError(error, "INVALID_ARGUMENT"), String(error));
    return error.field;
  }
  assert.fail("expected a validation error");
}

const body = object({
  devices: array(string({ pattern: /^[a-z]+$/ }), { minItems: 1 }),
  storage: object({ limitBytes: integer({ minimum: 1 }) }),
  writable: optional(boolean()),
  mode: optional(literal(["a", "b"])),
});

Deno.test("object() returns the typed value and drops absent optionals", () => {
  const value = body.parse({ devices: ["vda"], storage: { limitBytes: 5 } }, "");
  assert.deepEqual(value, { devices: ["vda"], storage: { limitBytes: 5 } });
});

Deno.test("validation errors name the field at fault", () => {
  assert.equal(fieldOf(() => body.parse({ storage: { limitBytes: 1 } }, "")), "devices");
  assert.equal(
    fieldOf(() => body.parse({ devices: ["ok", "NO"], storage: { limitBytes: 1 } }, "")),
    "devices[1]",
  );
  assert.equal(
    fieldOf(() => body.parse({ devices: ["a"], storage: { limitBytes: "1" } }, "")),
    "storage.limitBytes",
  );
  assert.equal(
    fieldOf(() => body.parse({ devices: ["a"], storage: { limitBytes: 0 } }, "")),
    "storage.limitBytes",
  );
  assert.equal(
    fieldOf(() => body.parse({ devices: ["a"], storage: { limitBytes: 1 }, extra: 1 }, "")),
    "extra",
  );
  assert.equal(
    fieldOf(() => body.parse({ devices: ["a"], storage: { limitBytes: 1 }, mode: "c" }, "")),
    "mode",
  );
  assert.equal(fieldOf(() => body.parse([], "")), undefined);
});

Deno.test("integer() refuses fractions and unsafe values, coerces query strings only when asked", () => {
  assert.equal(fieldOf(() => integer().parse(1.5, "n")), "n");
  assert.equal(fieldOf(() => integer().parse(2 ** 60, "n")), "n");
  assert.equal(fieldOf(() => integer().parse("12", "n")), "n");
  assert.equal(integer({ coerce: true }).parse("12", "n"), 12);
  assert.equal(fieldOf(() => integer({ coerce: true }).parse("12abc", "n")), "n");
});

Deno.test("jsonSchema() describes the same constraints that parse() enforces", () => {
  const schema = body.jsonSchema() as {
    required: string[];
    additionalProperties: boolean;
    properties: Record<string, Record<string, unknown>>;
  };
  assert.deepEqual(schema.required, ["devices", "storage"]);
  assert.equal(schema.additionalProperties, false);
  assert.equal(schema.properties.devices.minItems, 1);
  assert.deepEqual((schema.properties.mode as { enum: string[] }).enum, ["a", "b"]);
});
