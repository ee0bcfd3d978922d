import assert from "node:assert/strict";
import { hoistGlobalFlags } from "../../src/cli/global_flags.ts";
import { serviceBaseUrl } from "../../src/cli/context.ts";
import { UsageError } from "../../src/cli/exit_codes.ts";

Deno.test("hoistGlobalFlags lifts --url, --token-file and --json from anywhere to after the command's own", () => {
  assert.deepEqual(hoistGlobalFlags(["--url", "http://h", "--json", "snapshot", "list"]), {
    command: "snapshot",
    rest: ["list", "--url", "http://h", "--json"],
    help: false,
    version: false,
  });
  assert.deepEqual(
    hoistGlobalFlags(["snapshot", "--json", "create", "--url=http://h", "--device", "a"]).rest,
    ["create", "--device", "a", "--json", "--url=http://h"],
  );
  assert.deepEqual(hoistGlobalFlags(["attach", "--token-file", "t", "x.img"]).rest, [
    "x.img",
    "--token-file",
    "t",
  ]);
});

Deno.test("hoistGlobalFlags: --help and --version before the command are the program's; -- ends it", () => {
  assert.deepEqual(hoistGlobalFlags(["--help", "attach"]), {
    command: "attach",
    rest: ["--help"],
    help: true,
    version: false,
  });
  assert.equal(hoistGlobalFlags(["-V"]).version, true);
  assert.equal(hoistGlobalFlags(["attach", "--version"]).version, false, "after the command");
  assert.deepEqual(hoistGlobalFlags(["attach", "--", "--json"]).rest, ["--", "--json"]);
  assert.deepEqual(hoistGlobalFlags(["devices", "--url"]).rest, ["--url"], "left for the parser");
});

Deno.test("serviceBaseUrl takes the API address with or without /v1 and refuses what is not http", () => {
  assert.equal(serviceBaseUrl("http://127.0.0.1:8037"), "http://127.0.0.1:8037");
  assert.equal(serviceBaseUrl("http://127.0.0.1:8037/v1"), "http://127.0.0.1:8037");
  assert.equal(serviceBaseUrl("https://h/v1/"), "https://h");
  assert.equal(serviceBaseUrl("http://h/proxy/blksnap/v1"), "http://h/proxy/blksnap");
  assert.equal(serviceBaseUrl("http://h/v10"), "http://h/v10");
  for (const bad of ["127.0.0.1:8037", "ftp://h", "http://h/?x=1", "not a url"]) {
    assert.throws(() => serviceBaseUrl(bad), UsageError, bad);
  }
});
