/**
 * Part of the status page's script: the device and snapshot tables, every
 * value put in as text. See page_script.ts.
 *
 * @module
 */

/** The status page script's device and snapshot tables. */
export const SCRIPT_LISTS = String.raw`
  function renderDevices(devices) {
    byId("device-count").textContent = "(" + devices.length + ")";
    byId("devices-table").hidden = devices.length === 0;
    byId("devices-empty").hidden = devices.length > 0;
    if (!devices.some((d) => d.id === state.selectedDevice)) {
      state.selectedDevice = devices.length ? devices[0].id : "";
    }
    byId("device-rows").replaceChildren(...devices.map((device) => {
      const row = el(
        "tr",
        {
          class: "device" + (device.id === state.selectedDevice ? " selected" : ""),
          "data-device-id": device.id,
          title: "Show the CBT of " + device.id,
        },
        el("td", { class: "mono" }, device.id),
        el("td", { class: "path mono" }, device.path),
        el("td", { title: device.capacityBytes + " bytes" }, formatBytes(device.capacityBytes)),
        el("td", { class: "path mono" }, device.locator),
        el("td", { class: "mono", title: device.snapshotId }, device.snapshotId ? shortId(device.snapshotId) : "—"),
      );
      row.addEventListener("click", () => selectDevice(device.id));
      return row;
    }));
    const select = byId("cbt-device");
    select.replaceChildren(...devices.map((d) => el("option", { value: d.id }, d.id)));
    select.value = state.selectedDevice;
  }

  function storageCell(storage) {
    if (!storage) return el("td", {}, "—");
    const share = storage.limitBytes > 0 ? Math.min(1, storage.usedBytes / storage.limitBytes) : 0;
    const fill = el("div", {});
    fill.style.width = (share * 100).toFixed(1) + "%";
    return el(
      "td",
      { class: "usage", title: storage.path + ": " + storage.usedBytes + " of " + storage.limitBytes + " bytes" },
      el("span", { class: "used" }, formatBytes(storage.usedBytes) + " / " + formatBytes(storage.limitBytes)),
      el("div", { class: "bar" + (share >= 1 ? " full" : "") }, fill),
    );
  }

  function snapshotDevices(devices) {
    return devices.map((d) => d.errorCode ? d.deviceId + " (" + (d.errorName || "error " + d.errorCode) + ")" : d.deviceId).join(", ");
  }

  function renderSnapshots(snapshots) {
    byId("snapshot-count").textContent = "(" + snapshots.length + ")";
    byId("snapshots-table").hidden = snapshots.length === 0;
    byId("snapshots-empty").hidden = snapshots.length > 0;
    byId("snapshot-rows").replaceChildren(...snapshots.map((snapshot) =>
      el(
        "tr",
        { "data-snapshot-id": snapshot.id, "data-state": snapshot.state },
        el("td", { class: "mono", title: snapshot.id }, snapshot.id),
        el(
          "td",
          {},
          el("span", { class: "badge state-" + snapshot.state }, snapshot.state),
          snapshot.writable ? " writable" : "",
        ),
        el("td", { class: "mono" }, snapshotDevices(snapshot.devices || [])),
        storageCell(snapshot.storage),
        el("td", {}, formatTime(snapshot.createdAt)),
        el("td", {}, snapshot.takenAt ? formatTime(snapshot.takenAt) : "—"),
      )
    ));
  }
`;
