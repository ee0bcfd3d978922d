/**
 * Part of the status page's script: the page's state, DOM and formatting
 * helpers, requests to the API with the bearer token, and the token form
 * (asked for on a 401, kept in sessionStorage). See page_script.ts.
 *
 * @module
 */

/** The status page script's shared state, helpers, API access and token handling. */
export const SCRIPT_API = String.raw`
  const TOKEN_KEY = "blksnap.token";
  const API = new URL("../v1/", location.href);

  const state = {
    token: readToken(),
    needsToken: false,
    refreshing: false,
    selectedDevice: "",
    map: null,
    streams: new Map(),
    seenEvents: new Set(),
  };

  const byId = (id) => document.getElementById(id);

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage disabled: the token lives as long as the page.
    }
  }

  /** An element whose children are nodes or strings (strings become text nodes). */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== undefined && child !== null) node.append(child);
    }
    return node;
  }

  function formatBytes(bytes) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = Number(bytes);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    const text = unit === 0 ? String(value) : value.toFixed(1).replace(/\.0$/, "");
    return text + " " + units[unit];
  }

  /** Local time as YYYY-MM-DD HH:MM:SS. */
  function formatTime(value) {
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    const two = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + two(date.getMonth() + 1) + "-" + two(date.getDate()) + " " +
      two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds());
  }

  function shortId(id) {
    return String(id).slice(0, 8);
  }

  function messageOf(error) {
    return error instanceof Error ? error.message : String(error);
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail);
      this.status = status;
      this.problem = problem;
    }
  }

  async function problemOf(response) {
    try {
      const document = await response.json();
      if (document && typeof document.detail === "string") return document;
    } catch {
      // Not problem+json: described by its status below.
    }
    return { detail: "HTTP " + response.status + " " + response.statusText, code: "HTTP" };
  }

  /** Fetches an API path (relative to /v1/) with the token; throws ApiError when not 2xx. */
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.token) headers.set("authorization", "Bearer " + state.token);
    const response = await fetch(new URL(path, API), {
      headers,
      signal: options.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (response.ok) return response;
    const problem = await problemOf(response);
    if (response.status === 401) askForToken(problem.detail);
    throw new ApiError(response.status, problem);
  }

  async function apiJson(path) {
    return await (await api(path)).json();
  }

  function showBanner(text) {
    const banner = byId("banner");
    banner.textContent = text;
    banner.hidden = !text;
  }

  // Token handling.

  function askForToken(detail) {
    if (!state.needsToken) stopStreams();
    state.needsToken = true;
    byId("token-form").hidden = false;
    byId("token-message").textContent = state.token ? "The token was refused: " + detail : "";
    byId("forget-token").hidden = !state.token;
    byId("service").textContent = "token needed";
    byId("token-input").focus();
  }

  function useToken(token) {
    state.token = token;
    storeToken(token);
    state.needsToken = false;
    byId("token-form").hidden = true;
    byId("forget-token").hidden = !token;
    stopStreams();
    loadVersion();
    refresh();
  }

  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token-input");
    const token = input.value.trim();
    input.value = "";
    if (token) useToken(token);
  });
  byId("forget-token").addEventListener("click", () => useToken(""));
`;
