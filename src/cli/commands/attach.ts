/**
 * `blksnap attach`, `detach` and `devices`: start and stop tracking devices,
 * and list them.
 *
 * @module
 */

import type { DeviceInfo } from "../../driver.ts";
import type { Command } from "../command.ts";
import { CLIENT_FLAGS_HELP, clientFor, parseCommand, positional, print } from "../context.ts";

function describeDevice(device: DeviceInfo): string {
  if (device.state === "missing" || device.state === "refused") {
    return `${device.id}\t${device.path}\t${device.state}: ${device.error ?? ""}\n`;
  }
  const snapshot = device.snapshotId ? `  snapshot ${device.snapshotId}` : "";
  return `${device.id}\t${device.path}\t${device.capacityBytes} bytes\t${device.locator}${snapshot}\n`;
}

/** The attach command. */
export const attach: Command = {
  help: `Usage: blksnap attach [--name NAME] PATH [options]

Attaches the block device (or, with the userspace backend, the regular file)
at PATH: change tracking starts. The device's id is NAME, or PATH's base name.

  --name NAME   the device's id (letters, digits, '.', '_', ':', '-')
${CLIENT_FLAGS_HELP}`,
  async run(args, io) {
    const parsed = parseCommand(args, { name: { type: "string" } });
    if (parsed.values.help) return io.out(attach.help), 0;
    const path = positional(parsed, 0, "PATH (the device to attach)");
    const client = await clientFor(parsed, io);
    const device = await client.devices.attach({
      path,
      ...(parsed.values.name ? { name: parsed.values.name as string } : {}),
    });
    print(parsed, io, device, () => `attached ${describeDevice(device)}`);
    return 0;
  },
};

/** The detach command. */
export const detach: Command = {
  help: `Usage: blksnap detach DEVICE [options]

Detaches DEVICE: change tracking stops and its CBT map is dropped.

${CLIENT_FLAGS_HELP}`,
  async run(args, io) {
    const parsed = parseCommand(args, {});
    if (parsed.values.help) return io.out(detach.help), 0;
    const id = positional(parsed, 0, "DEVICE (the device's id)");
    await (await clientFor(parsed, io)).devices.detach(id);
    print(parsed, io, { detached: id }, () => `detached ${id}\n`);
    return 0;
  },
};

/** The devices command. */
export const devices: Command = {
  help: `Usage: blksnap devices [options]

Lists the attached devices: id, path, capacity, where to do tracked I/O.

${CLIENT_FLAGS_HELP}`,
  async run(args, io) {
    const parsed = parseCommand(args, {});
    if (parsed.values.help) return io.out(devices.help), 0;
    const list = await (await clientFor(parsed, io)).devices.list();
    print(
      parsed,
      io,
      list,
      () => list.length ? list.map(describeDevice).join("") : "no devices attached\n",
    );
    return 0;
  },
};
