#!/bin/sh
# The e2e runner, shipped with every lab run and started by the guest agent with LAB_IN (this
# run's input: lab.env, tests/*_test.js bundled by the host, the module input) and LAB_OUT (what
# goes back to the host). Runs the bundled test files with `deno test` (default reporter, streamed
# to the host as progress; JUnit XML for the verdict). A new e2e case is a new tests/e2e/*_test.ts
# on the host: the lab bundles it and this script runs it, nothing else to register.
set -u
. "$LAB_IN/lab.env"

export LAB_IN LAB_OUT LAB_KERNEL_PACKAGE
export LAB_SCRATCH_DISK=/dev/disk/by-id/virtio-lab-scratch
if [ -d "$LAB_IN/module-src" ]; then export LAB_MODULE_SRC="$LAB_IN/module-src"; fi
if [ -d "$LAB_IN/module-ko" ]; then export LAB_MODULE_KO="$LAB_IN/module-ko"; fi
if [ -f /opt/blksnap/blksnap.js ]; then export LAB_SERVICE_BUNDLE=/opt/blksnap/blksnap.js; fi
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

echo "lab-run: kernel $(uname -r), $(deno --version | head -n 1), $(nproc) cpus"
cd "$LAB_IN" || exit 3
# shellcheck disable=SC2046 # the host names the bundles; no spaces
set -- $(find tests -name '*_test.js' | sort)
if [ -n "${LAB_FILTER:-}" ]; then set -- --filter "$LAB_FILTER" "$@"; fi

rc_file="$LAB_OUT/deno-test.rc"
{
  deno test --no-config --allow-all --junit-path="$LAB_OUT/junit.xml" "$@"
  echo $? > "$rc_file"
} 2>&1 | tee "$LAB_OUT/test-output.txt"
exit "$(cat "$rc_file")"
