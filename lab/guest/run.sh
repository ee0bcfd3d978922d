#!/bin/sh
# The e2e runner, shipped with every lab run and started by the guest agent with LAB_IN (this
# run's input: lab.env, tests/*_test.js bundled by the host, the module input) and LAB_OUT (what
# goes back to the host). Runs the bundled test files with `deno test` (default reporter, streamed
# to the host as progress; JUnit XML for the verdict). A new e2e case is a new tests/e2e/*_test.ts
# on the host: the lab bundles it and this script runs it, nothing else to register.
set -u
. "$LAB_IN/lab.env"

export LAB_IN LAB_OUT LAB_KERNEL_PACKAGE
release="$(uname -r)"
# A custom kernel (--kernel-image): check that it is the one running, install its modules (onto
# this run's overlay of the image, never into the image) and point the module build at its
# kbuild tree. The image's Debian headers are for another kernel and are never used for it.
if [ -n "${LAB_KERNEL_IMAGE:-}" ]; then
  export LAB_KERNEL_IMAGE
  if [ "$release" != "$LAB_KERNEL_IMAGE" ]; then
    echo "lab-run: the running kernel is $release, not the --kernel-image ($LAB_KERNEL_IMAGE)"
    exit 3
  fi
  if [ -d "$LAB_IN/kernel-modules" ]; then
    rm -rf "/lib/modules/$release"
    mkdir -p /lib/modules
    cp -a "$LAB_IN/kernel-modules" "/lib/modules/$release"
    depmod "$release"
  fi
  if [ -d "$LAB_IN/kernel-headers" ]; then export LAB_KERNEL_HEADERS="$LAB_IN/kernel-headers"; fi
fi
export LAB_SCRATCH_DISK=/dev/disk/by-id/virtio-lab-scratch
# The kernel's own blksnap, seen before any case loads anything: built in (its control device is
# there at boot), or a module of the --kernel-image.
if [ -e /dev/blksnap-control ]; then
  export LAB_KERNEL_BLKSNAP=builtin
elif [ -n "${LAB_KERNEL_IMAGE:-}" ] && modinfo blksnap >/dev/null 2>&1; then
  export LAB_KERNEL_BLKSNAP=module
fi
if [ -d "$LAB_IN/module-src" ]; then export LAB_MODULE_SRC="$LAB_IN/module-src"; fi
if [ -d "$LAB_IN/module-ko" ]; then export LAB_MODULE_KO="$LAB_IN/module-ko"; fi
if [ -f /opt/blksnap/blksnap.js ]; then export LAB_SERVICE_BUNDLE=/opt/blksnap/blksnap.js; fi
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1

echo "lab-run: kernel $release, $(deno --version | head -n 1), $(nproc) cpus," \
  "blksnap ${LAB_KERNEL_BLKSNAP:-not in the kernel}"
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
