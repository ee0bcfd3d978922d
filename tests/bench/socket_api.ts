/**
 * Which socket API the NBD server should use: Deno.listen/Deno.Conn or
 * node:net. Spawns a server of each kind in its own process and measures,
 * from a Deno client, bulk transfer both ways (2 GiB in 256 KiB writes,
 * 1 GiB back) and the round trip of 16-byte request/reply pairs.
 *
 *   deno run -A tests/bench/socket_api.ts
 *
 * @module
 */

import net from "node:net";

const BULK_CHUNK = 256 * 1024;
const ROUND_TRIPS = 30_000;

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await conn.write(data.subarray(done));
}

/** Mode 1: count bytes until EOF and report; 2: echo; 3: send 1 GiB. */
function serveDeno(): void {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log((listener.addr as Deno.NetAddr).port);
  (async () => {
    for await (const conn of listener) {
      conn.setNoDelay(true);
      (async () => {
        const buffer = new Uint8Array(BULK_CHUNK);
        const mode = new Uint8Array(1);
        await conn.read(mode);
        if (mode[0] === 1) {
          let total = 0;
          let n;
          while ((n = await conn.read(buffer)) !== null) total += n;
          await writeAll(conn, new TextEncoder().encode(String(total)));
        } else if (mode[0] === 2) {
          let n;
          while ((n = await conn.read(buffer)) !== null) {
            await writeAll(conn, buffer.subarray(0, n));
          }
        } else {
          for (let i = 0; i < 4096; i++) await writeAll(conn, buffer);
        }
        conn.close();
      })();
    }
  })();
}

function serveNode(): void {
  const server = net.createServer({ noDelay: true }, (socket) => {
    let mode = -1;
    let total = 0;
    socket.on("data", (chunk: Uint8Array) => {
      if (mode === -1) {
        mode = chunk[0];
        chunk = chunk.subarray(1);
        if (mode === 3) {
          const block = new Uint8Array(BULK_CHUNK);
          let sent = 0;
          const pump = () => {
            while (sent < 4096) {
              sent++;
              if (!socket.write(block)) return void socket.once("drain", pump);
            }
            socket.end();
          };
          pump();
        }
      }
      if (mode === 1) total += chunk.length;
      else if (mode === 2 && chunk.length > 0) socket.write(chunk);
    });
    socket.on("end", () => mode === 1 ? socket.end(String(total)) : socket.end());
  });
  server.listen(0, "127.0.0.1", () => console.log((server.address() as net.AddressInfo).port));
}

async function measure(port: number): Promise<Record<string, number>> {
  const connect = () => Deno.connect({ hostname: "127.0.0.1", port });
  const upload = await connect();
  await writeAll(upload, new Uint8Array([1]));
  const chunk = new Uint8Array(BULK_CHUNK);
  let start = performance.now();
  for (let i = 0; i < 8192; i++) await writeAll(upload, chunk);
  await upload.closeWrite();
  await upload.read(new Uint8Array(64));
  const serverReads = 2048 / ((performance.now() - start) / 1000);
  upload.close();

  const download = await connect();
  await writeAll(download, new Uint8Array([3]));
  let total = 0;
  let n;
  start = performance.now();
  while ((n = await download.read(chunk)) !== null) total += n;
  const serverWrites = total / 1048576 / ((performance.now() - start) / 1000);
  download.close();

  const echo = await connect();
  echo.setNoDelay(true);
  await writeAll(echo, new Uint8Array([2]));
  const message = new Uint8Array(16);
  start = performance.now();
  for (let i = 0; i < ROUND_TRIPS; i++) {
    await writeAll(echo, message);
    let got = 0;
    while (got < 16) got += (await echo.read(message.subarray(got)))!;
  }
  const roundTripUs = ((performance.now() - start) * 1000) / ROUND_TRIPS;
  echo.close();
  return {
    serverReadMiBs: Math.round(serverReads),
    serverWriteMiBs: Math.round(serverWrites),
    roundTripUs: Math.round(roundTripUs * 10) / 10,
  };
}

const kind = Deno.args[0];
if (kind === "--serve-deno") serveDeno();
else if (kind === "--serve-node") serveNode();
else {
  for (const server of ["deno", "node"]) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", new URL(import.meta.url).pathname, `--serve-${server}`],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    const port = Number(new TextDecoder().decode(value).trim());
    console.log(`${server === "deno" ? "Deno.Conn" : "node:net"}:`, await measure(port));
    child.kill("SIGTERM");
    reader.releaseLock();
    await child.stdout.cancel();
    await child.status;
  }
}
