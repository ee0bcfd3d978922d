import assert from "node:assert/strict";
import { headersPackage, parseLabArgs } from "../../lab/args.ts";
import { isServiceError } from "../../src/errors.ts";

Deno.test("parseLabArgs defaults: generic kernel, no module, auto accelerator", () => {
  assert.deepEqual(parseLabArgs([]), {
    kernel: "linux-image-amd64",
    keep: false,
    accel: "auto",
    timeoutMinutes: 60,
    rebuild: false,
    verbose: false,
    help: false,
  });
});

Deno.test("parseLabArgs reads every option", () => {
  const options = parseLabArgs([
    "--kernel",
    "linux-image-rt-amd64",
    "--module-src",
    "/src/module",
    "--only",
    "nbd",
    "--keep",
    "--accel=tcg",
    "--timeout",
    "15",
    "--rebuild",
    "--verbose",
  ]);
  assert.equal(options.kernel, "linux-image-rt-amd64");
  assert.equal(options.moduleSrc, "/src/module");
  assert.equal(options.only, "nbd");
  assert.equal(options.keep, true);
  assert.equal(options.accel, "tcg");
  assert.equal(options.timeoutMinutes, 15);
  assert.equal(options.rebuild, true);
  assert.equal(options.verbose, true);
});

Deno.test("parseLabArgs rejects both module inputs at once", () => {
  assert.throws(
    () => parseLabArgs(["--module-src", "a", "--module-ko", "b"]),
    (error) => isServiceError(error, "INVALID_ARGUMENT") && error.field === "module-src",
  );
});

Deno.test("parseLabArgs rejects bad values and unknown options", () => {
  for (
    const args of [
      ["--kernel", "linux-headers-amd64"],
      ["--kernel", "linux-image-amd64; rm -rf /"],
      ["--accel", "xen"],
      ["--timeout", "0"],
      ["--timeout", "soon"],
      ["--only", ""],
      ["--bogus"],
      ["stray"],
    ]
  ) {
    assert.throws(() => parseLabArgs(args), (error) => isServiceError(error, "INVALID_ARGUMENT"));
  }
});

Deno.test("headersPackage follows the kernel flavour", () => {
  assert.equal(headersPackage("linux-image-amd64"), "linux-headers-amd64");
  assert.equal(headersPackage("linux-image-cloud-amd64"), "linux-headers-cloud-amd64");
  assert.equal(headersPackage("linux-image-rt-amd64"), "linux-headers-rt-amd64");
  assert.equal(headersPackage("linux-image-6.1.0-56-amd64"), "linux-headers-6.1.0-56-amd64");
});

Deno.test("parseLabArgs takes a custom kernel with its modules and headers", () => {
  const options = parseLabArgs([
    "--kernel-image",
    "/k/bzImage",
    "--kernel-modules",
    "/k/mod/lib/modules/6.12.117",
    "--kernel-headers",
    "/k/build",
    "--module-src",
    "/src/module",
  ]);
  assert.equal(options.kernelImage, "/k/bzImage");
  assert.equal(options.kernelModules, "/k/mod/lib/modules/6.12.117");
  assert.equal(options.kernelHeaders, "/k/build");
  assert.equal(options.kernel, "linux-image-amd64", "the image's userland still comes from it");
});

Deno.test("parseLabArgs: modules and headers need a --kernel-image; a module build needs headers", () => {
  for (const name of ["kernel-modules", "kernel-headers"]) {
    assert.throws(
      () => parseLabArgs([`--${name}`, "/k"]),
      (error) => isServiceError(error, "INVALID_ARGUMENT") && error.field === name,
    );
  }
  assert.throws(
    () => parseLabArgs(["--kernel-image", "/k/bzImage", "--module-src", "/src"]),
    (error) =>
      isServiceError(error, "INVALID_ARGUMENT") && error.field === "kernel-headers" &&
      /Debian headers are for another kernel/.test(error.message),
  );
  assert.equal(
    parseLabArgs(["--kernel-image", "/k/bzImage", "--module-ko", "/ko"]).moduleKo,
    "/ko",
  );
});
