import assert from "node:assert/strict";
import { DEFAULT_NBD_MAX_CONNECTIONS, serveLimits } from "../../src/cli/commands/serve_limits.ts";
import type { CliIo } from "../../src/cli/context.ts";
import { UsageError } from "../../src/cli/exit_codes.ts";

function io(env: Record<string, string>): CliIo {
  return { out: () => {}, err: () => {}, env: (name) => env[name] };
}

Deno.test("serveLimits() reads flags over BLKSNAP_* variables, defaults otherwise", () => {
  assert.deepEqual(serveLimits({}, io({})), {
    http: {},
    nbdMaxConnections: DEFAULT_NBD_MAX_CONNECTIONS,
  });
  const limits = serveLimits(
    { "http-max-connections": "10", "body-timeout": "500" },
    io({
      BLKSNAP_HTTP_MAX_CONNECTIONS: "99",
      BLKSNAP_IDLE_TIMEOUT_MS: "700",
      BLKSNAP_NBD_MAX_CONNECTIONS: "3",
      BLKSNAP_BODY_BYTES_IN_FLIGHT: "1024",
    }),
  );
  assert.deepEqual(limits, {
    http: {
      maxConnections: 10,
      bodyTimeoutMs: 500,
      idleTimeoutMs: 700,
      maxBodyBytesInFlight: 1024,
    },
    nbdMaxConnections: 3,
  });
});

Deno.test("serveLimits() refuses anything but a whole number >= 1", () => {
  for (const text of ["0", "-1", "1.5", "abc", ""]) {
    assert.throws(() => serveLimits({ "headers-timeout": text }, io({})), UsageError, text);
  }
});
