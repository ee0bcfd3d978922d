import assert from "node:assert/strict";
import { ServiceError } from "../../src/errors.ts";
import { NbdError } from "../../src/nbd/constants.ts";
import { nbdFailureOf } from "../../src/nbd/errno_map.ts";

const plain = { fastZero: false, overflowAllowed: false };

Deno.test("nbdFailureOf() reads the error table", () => {
  const cases: [ServiceError, number][] = [
    [new ServiceError("READ_ONLY", "x"), NbdError.NBD_EPERM],
    [new ServiceError("STORAGE_EXHAUSTED", "x"), NbdError.NBD_ENOSPC],
    [new ServiceError("SNAPSHOT_CORRUPTED", "x"), NbdError.NBD_EIO],
    [new ServiceError("OUT_OF_RANGE", "x"), NbdError.NBD_EINVAL],
    [new ServiceError("UNAVAILABLE", "x"), NbdError.NBD_ESHUTDOWN],
  ];
  for (const [error, expected] of cases) assert.equal(nbdFailureOf(error, plain).error, expected);
  assert.equal(nbdFailureOf(new ServiceError("IO", "disk gone"), plain).message, "disk gone");
});

Deno.test("nbdFailureOf() sends ENOTSUP only for FAST_ZERO and EOVERFLOW only where allowed", () => {
  const unsupported = new ServiceError("NOT_SUPPORTED", "slow");
  assert.equal(nbdFailureOf(unsupported, plain).error, NbdError.NBD_EINVAL);
  assert.equal(nbdFailureOf(unsupported, { ...plain, fastZero: true }).error, NbdError.NBD_ENOTSUP);
  const tooLarge = new ServiceError("PAYLOAD_TOO_LARGE", "big");
  assert.equal(nbdFailureOf(tooLarge, plain).error, NbdError.NBD_EINVAL);
  assert.equal(
    nbdFailureOf(tooLarge, { ...plain, overflowAllowed: true }).error,
    NbdError.NBD_EOVERFLOW,
  );
});

Deno.test("nbdFailureOf() turns unexpected errors into EIO", () => {
  const failure = nbdFailureOf(new RangeError("beyond capacity"), plain);
  assert.equal(failure.error, NbdError.NBD_EIO);
  assert.match(failure.message, /beyond capacity/);
});
