/**
 * Reading a --kernel-image: the release from a real bzImage's setup header (the host's Debian
 * kernel, whose release the file name carries), and refusals for what is not a bzImage.
 */

import assert from "node:assert/strict";
import { kernelLine } from "../../lab/main.ts";
import { bzImageVersion, readCustomKernel } from "../../lab/kernel_image.ts";
import { isServiceError } from "../../src/errors.ts";

function hostKernels(): string[] {
  try {
    return [...Deno.readDirSync("/boot")].map((e) => e.name).filter((n) =>
      n.startsWith("vmlinuz-")
    );
  } catch {
    return [];
  }
}

const kernels = hostKernels();

Deno.test({
  name: "readCustomKernel reads the release of a real bzImage from its setup header",
  ignore: kernels.length === 0,
  async fn() {
    for (const name of kernels) {
      let kernel;
      try {
        kernel = await readCustomKernel(`/boot/${name}`);
      } catch (error) {
        if (error instanceof Error && /does not exist/.test(error.message)) continue; // unreadable
        throw error;
      }
      assert.equal(kernel.release, name.slice("vmlinuz-".length));
      assert.match(kernel.version, /^\S+ \(.*\) #/);
      assert.match(kernel.sha256, /^[0-9a-f]{64}$/);
    }
  },
});

Deno.test("bzImageVersion: a made-up setup header, and files that are not bzImages", () => {
  const image = new Uint8Array(4096);
  image.set(new TextEncoder().encode("HdrS"), 0x202);
  image[0x20e] = 0x00;
  image[0x20f] = 0x02; // the string at 0x200 + 0x200
  image.set(new TextEncoder().encode("6.12.117 (root@vm) #1 SMP\0"), 0x400);
  assert.equal(bzImageVersion(image), "6.12.117 (root@vm) #1 SMP");
  assert.equal(bzImageVersion(new Uint8Array(4096)), undefined, "no magic");
  const noString = image.slice();
  noString.fill(0, 0x400);
  assert.equal(bzImageVersion(noString), undefined, "nothing where the header points");
  assert.equal(bzImageVersion(new Uint8Array(16)), undefined, "too short");
});

Deno.test("readCustomKernel refuses a missing file and a file that is no bzImage", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      readCustomKernel(`${dir}/missing`),
      (error) => isServiceError(error, "NOT_FOUND") && error.field === "kernel-image",
    );
    await Deno.writeTextFile(`${dir}/vmlinux`, "\x7fELF not a bzImage");
    await assert.rejects(
      readCustomKernel(`${dir}/vmlinux`),
      (error) =>
        isServiceError(error, "INVALID_ARGUMENT") && /not an x86 bzImage/.test(error.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kernelLine names what the guest booted and where the kernel came from", () => {
  assert.equal(
    kernelLine("6.1.0-57-amd64", {
      imageRelease: "6.1.0-57-amd64",
      kernelPackage: "linux-image-amd64",
    }),
    "kernel: 6.1.0-57-amd64 (linux-image-amd64 6.1.0-57-amd64)",
  );
  const custom = {
    path: "/k/bzImage",
    release: "6.12.117",
    version: "6.12.117 (x)",
    sha256: "ab".repeat(32),
  };
  assert.equal(
    kernelLine("6.12.117", {
      imageRelease: "6.1.0-57-amd64",
      kernelPackage: "linux-image-amd64",
      custom,
    }),
    "kernel: 6.12.117 (--kernel-image /k/bzImage, release 6.12.117, sha256 abababababababab; " +
      "image userland from linux-image-amd64)",
  );
  assert.match(
    kernelLine(undefined, { imageRelease: "r", kernelPackage: "p", custom }),
    /^kernel: unknown/,
  );
});
