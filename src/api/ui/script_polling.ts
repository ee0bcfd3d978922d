/**
 * Part of the status page's script, the last: reading devices, snapshots
 * and the map every REFRESH_MS, and the start of it all. See page_script.ts.
 *
 * @module
 */

/** The status page script's polling loop and start. */
export const SCRIPT_POLLING = String.raw`
  const REFRESH_MS = 2000;

  async function loadVersion() {
    try {
      const version = await apiJson("version");
      const parts = ["service " + version.service, version.backend + " backend"];
      if (version.profile) parts.push(version.profile + " profile");
      if (version.moduleVersion) parts.push("module " + version.moduleVersion);
      byId("service").textContent = parts.join(" · ");
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) byId("service").textContent = "unreachable";
    }
  }

  async function refresh() {
    if (state.refreshing || state.needsToken || document.hidden) return;
    state.refreshing = true;
    try {
      const [devices, snapshots] = await Promise.all([apiJson("devices"), apiJson("snapshots")]);
      renderDevices(devices);
      renderSnapshots(snapshots);
      syncStreams(snapshots);
      await refreshCbt();
      showBanner("");
      byId("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        showBanner("Cannot read the service's state: " + messageOf(error));
      }
    } finally {
      state.refreshing = false;
    }
  }

  async function poll() {
    await refresh();
    setTimeout(poll, REFRESH_MS);
  }

  document.addEventListener("visibilitychange", () => refresh());
  byId("forget-token").hidden = !state.token;
  drawLegend(1);
  loadVersion();
  poll();
`;
