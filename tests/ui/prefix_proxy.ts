/**
 * A reverse proxy on a free loopback port that serves a service under a
 * path prefix (`/prefix/ui/` → `/ui/`), as a site's front end would, and
 * can end the event streams passing through it, as a front end's idle
 * timeout would. It records every request path and each event stream request's
 * `Last-Event-ID`.
 *
 * @module
 */

/** A running proxy. */
export interface PrefixProxy {
  /** http://127.0.0.1:PORT/<prefix> (no trailing slash). */
  baseUrl: string;
  /** Paths (with query) of every request the proxy received, in order. */
  paths: string[];
  /** The `Last-Event-ID` of each event stream request, in order ("" when absent). */
  streamLastEventIds: string[];
  /** Ends every event stream open through the proxy (cleanly); returns how many it ended. */
  cutStreams(): number;
}

/**
 * Starts a proxy that forwards `/<prefix>/REST` to `upstream` + `/REST`,
 * runs `body` with it, then cuts what is open and shuts it down.
 */
export async function withPrefixProxy(
  upstream: string,
  options: { prefix: string },
  body: (proxy: PrefixProxy) => Promise<void>,
): Promise<void> {
  const mount = `/${options.prefix}`;
  const cuts = new Set<() => void>();
  const paths: string[] = [];
  const streamLastEventIds: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      paths.push(url.pathname + url.search);
      if (!url.pathname.startsWith(`${mount}/`)) {
        return new Response("not proxied", { status: 404 });
      }
      const isStream = url.pathname.endsWith("/events/stream");
      if (isStream) streamLastEventIds.push(request.headers.get("last-event-id") ?? "");
      const headers = new Headers(request.headers);
      headers.delete("host");
      const answer = await fetch(upstream + url.pathname.slice(mount.length) + url.search, {
        method: request.method,
        headers,
        body: request.body,
        redirect: "manual",
      });
      const relayed = new Headers(answer.headers);
      relayed.delete("content-length");
      if (!isStream || !answer.body) {
        return new Response(answer.body, { status: answer.status, headers: relayed });
      }
      // Relayed chunk by chunk; a cut cancels the upstream read, which ends this body cleanly.
      const reader = answer.body.getReader();
      const cut = () => void reader.cancel().catch(() => {});
      cuts.add(cut);
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const { done, value } = await reader.read();
          if (done) {
            cuts.delete(cut);
            controller.close();
          } else controller.enqueue(value);
        },
        cancel: () => {
          cuts.delete(cut);
          return reader.cancel();
        },
      });
      return new Response(body, { status: answer.status, headers: relayed });
    },
  );
  const proxy: PrefixProxy = {
    baseUrl: `http://127.0.0.1:${server.addr.port}${mount}`,
    paths,
    streamLastEventIds,
    cutStreams() {
      const count = cuts.size;
      for (const cut of [...cuts]) cut();
      cuts.clear();
      return count;
    },
  };
  try {
    await body(proxy);
  } finally {
    proxy.cutStreams();
    await server.shutdown();
    await server.finished;
  }
}
