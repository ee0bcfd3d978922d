/**
 * `blksnapctl version`: the service's version, backend and capabilities.
 *
 * @module
 */

import type { Command } from "../command.ts";
import { CLIENT_FLAGS_HELP, clientFor, parseCommand, print } from "../context.ts";
import { PROGRAM } from "../program.ts";
import { SERVICE_VERSION } from "../../version.ts";

/** The version command. */
export const command: Command = {
  help: `Usage: ${PROGRAM} version [options]

Shows this program's version, then the service's: version, backend (kernel or
userspace), kernel profile and module version, and capabilities. For this
program's version alone, without a service, run "${PROGRAM} --version".

${CLIENT_FLAGS_HELP}`,
  async run(args, io) {
    const parsed = parseCommand(args, {});
    if (parsed.values.help) return io.out(command.help), 0;
    const version = await (await clientFor(parsed, io)).version();
    print(parsed, io, version, () =>
      [
        `client        ${SERVICE_VERSION}`,
        `service       ${version.service}`,
        `backend       ${version.backend}`,
        ...(version.profile ? [`profile       ${version.profile}`] : []),
        ...(version.moduleVersion ? [`module        ${version.moduleVersion}`] : []),
        `capabilities  ${version.capabilities.join(", ")}`,
      ].join("\n") + "\n");
    return 0;
  },
};
