/**
 * The NBD protocol server: serves anything implementing {@link NbdExport}
 * over TCP and Unix sockets, with the fixed newstyle handshake, structured
 * replies, metadata contexts and pipelined, out-of-order replies.
 *
 * @example
 * ```ts
 * import { startNbdServer, staticProvider, type NbdExport } from "./mod.ts";
 * declare const disk: NbdExport;
 * const server = await startNbdServer(staticProvider([disk]), { tcp: { port: 0 } });
 * console.log(`nbd://127.0.0.1:${server.tcpPort}/${disk.name}`);
 * await server.close();
 * ```
 *
 * @module
 */

export * from "./constants.ts";
export type { ExportProvider, NbdBlockSize, NbdExport, NbdExtent } from "./export.ts";
export { staticProvider } from "./export.ts";
export type { NbdLogger, NbdLogLevel } from "./log.ts";
export { silentLogger } from "./log.ts";
export type { NbdServer, NbdServerOptions } from "./server.ts";
export { startNbdServer } from "./server.ts";
export { type ReadProbe, ReadProbeBoard } from "./read_probes.ts";
export { NbdStats } from "./stats.ts";
