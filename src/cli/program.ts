/**
 * The command's name. It is `blksnapctl`, not `blksnap`: veeam/blksnap ships
 * its own `blksnap` tool with the kernel module (the one hosts of the kernel
 * backend may have installed), and the two must be able to sit side by side
 * on one PATH. `ctl` says what this one is: the control tool of a service,
 * in the manner of systemctl and udevadm-like peers.
 *
 * @module
 */

/** The command's name, as help texts, messages and build outputs spell it. */
export const PROGRAM = "blksnapctl";
