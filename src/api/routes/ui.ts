/**
 * The status page route: `GET /ui/` answers the static page and `GET /ui`
 * redirects to it. The page holds no data and no secret, so it is served
 * without a token (a browser cannot send a bearer header when it opens a
 * URL); everything it shows it fetches from /v1/, which needs the token as
 * before. Register it before the authentication middleware.
 *
 * @module
 */

import { Hono } from "hono";
import { STATUS_PAGE_HEADERS, STATUS_PAGE_HTML } from "../ui/page.ts";

/** A Hono app holding the status page routes, to mount at "/" ahead of authentication. */
export const statusPage: Hono = new Hono()
  .get("/ui", () => new Response(null, { status: 308, headers: { location: "ui/" } }))
  .get("/ui/", () => new Response(STATUS_PAGE_HTML, { headers: STATUS_PAGE_HEADERS }));
