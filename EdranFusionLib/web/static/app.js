// EdranFusion page: pick two volumes, queue a fusion job on the server, follow its progress, show the result in
// linked NiiVue views (axial, coronal, sagittal) and download it. All fusion happens on the server.
"use strict";

const $ = (id) => document.getElementById(id);
const UPLOAD = "__upload__";
const COLOURS = ["gray", "hot", "warm", "plasma", "viridis", "inferno", "winter", "red", "green", "blue"];

function randomId() {  // crypto.randomUUID needs a secure context; a page over plain http may not be one
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
const clientId = sessionStorage.getItem("edranfusion-client") || randomId();
sessionStorage.setItem("edranfusion-client", clientId);

async function api(path, options = {}) {
  const headers = Object.assign({ "X-EdranFusion-Client": clientId }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = `the server answered ${response.status}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function showError(message) { $("error").textContent = message ? `error: ${message}` : ""; }

function fillSelect(select, entries) {
  select.replaceChildren(...entries.map(([value, text]) => new Option(text, value)));
}

let currentJob = null;
let polling = null;
const views = {};
const buffers = {};

function buildViewRow(key, title) {  // one row of linked views: title, colour, window/level, canvas
  const row = $("view-row-template").content.firstElementChild.cloneNode(true);
  row.querySelector("h2").append(title, " ", Object.assign(document.createElement("span"), { id: `label-${key}` }));
  for (const part of ["cmap", "level", "window"]) row.querySelector(`.${part}`).id = `${part}-${key}`;
  row.querySelector("canvas").id = `view-${key}`;
  $("view-rows").append(row);
  return row;
}

function buildViewRows() {
  buildViewRow("a", "A");
  buildViewRow("b", "B");
  const fused = buildViewRow("fused", "Fused over");
  fused.querySelector("h2").append($("base"));
  fused.querySelector(".controls").prepend($("opacity-label"));
}

async function init() {
  buildViewRows();
  const info = await (await api("/api/info")).json();
  const data = info.has_data ? (await (await api("/api/data")).json()).volumes : [];
  for (const key of ["a", "b"]) {
    fillSelect($(`source-${key}`), [[UPLOAD, "upload a file…"], ...data.map((name) => [name, name])]);
    $(`source-${key}`).addEventListener("change", () => { $(`file-${key}`).hidden = $(`source-${key}`).value !== UPLOAD; });
    $(`file-${key}`).hidden = data.length > 0;
    if (data.length > 0) $(`source-${key}`).value = data[Math.min(data.length - 1, key === "a" ? 0 : 1)];
  }
  fillSelect($("model"), Object.entries(info.models).map(([name, task]) => [name, `${name} (${task})`]));
  $("model").value = "general" in info.models ? "general" : $("model").value;
  fillSelect($("strategy"), info.strategies.map((s) => [s, s]));
  // Each model brings its own default strategy (its card's; sfnn-max, the paper's, otherwise).
  // What the chosen strategy does, and whether it is the paper's, under the list.
  const describeStrategy = () => { $("strategy-note").textContent = info.strategy_descriptions[$("strategy").value] || ""; };
  const pickDefaultStrategy = () => {
    $("strategy").value = info.default_strategies[$("model").value] || "sfnn-max";
    describeStrategy();
  };
  $("model").addEventListener("change", pickDefaultStrategy);
  $("strategy").addEventListener("change", describeStrategy);
  pickDefaultStrategy();
  fillSelect($("device"), Object.entries(info.devices).map(([name, label]) => [name, `${name}: ${label}`]));
  fillSelect($("format"), info.download_formats.map((f) => [f, f === "nii.gz" ? "NIfTI (.nii.gz)" : "NRRD (.nrrd)"]));
  for (const select of document.querySelectorAll(".cmap")) fillSelect(select, COLOURS.map((c) => [c, c]));
  $("device-label").textContent = info.devices.auto;
  $("device").addEventListener("change", () => { $("device-label").textContent = info.devices[$("device").value]; });
  $("max-upload").textContent = info.max_upload_mb;
  $("fuse").addEventListener("click", () => fuse().catch((e) => { showError(e.message); $("fuse").disabled = false; }));
  $("cancel").addEventListener("click", cancel);
  $("download").addEventListener("click", () => download().catch((e) => showError(e.message)));
  $("fuse").disabled = false;
  document.body.dataset.state = "idle";
}

async function inputSpec(key) {
  const source = $(`source-${key}`).value;
  if (source !== UPLOAD) return { data: source };
  const file = $(`file-${key}`).files[0];
  if (!file) throw new Error(`choose the file of volume ${key.toUpperCase()} (or pick one from the data folder)`);
  $("status").textContent = `uploading ${file.name}…`;
  const response = await api(`/api/uploads?name=${encodeURIComponent(file.name)}`,
    { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
  return { upload: (await response.json()).upload };
}

async function fuse() {
  showError("");
  $("fuse").disabled = true;
  $("views").hidden = true;
  document.body.dataset.state = "submitting";
  const job = {
    a: await inputSpec("a"), b: await inputSpec("b"), model: $("model").value, strategy: $("strategy").value,
    device: $("device").value, resample: $("resample").checked,
  };
  const submitted = await (await api("/api/jobs", {
    method: "POST", body: JSON.stringify(job), headers: { "Content-Type": "application/json" },
  })).json();
  currentJob = submitted.id;
  $("fuse").disabled = false;
  follow(submitted);
}

function follow(job) {
  clearInterval(polling);
  showJob(job);
  polling = setInterval(async () => {
    try {
      const latest = await (await api(`/api/jobs/${currentJob}`)).json();
      showJob(latest);
      refreshJobList();
      if (!["queued", "running"].includes(latest.state)) {
        clearInterval(polling);
        if (latest.state === "done") await showResult(latest);
      }
    } catch (error) { clearInterval(polling); showError(error.message); }
  }, 400);
}

function showJob(job) {
  document.body.dataset.state = job.state;
  $("progress").value = job.progress;
  const percent = `${Math.round(job.progress * 100)}%`;
  const ahead = job.queue_position > 1 ? ` (${job.queue_position - 1} job(s) ahead of yours)` : "";
  $("status").textContent = job.state === "queued" ? `waiting in the queue${ahead}`
    : job.state === "running" ? `${job.phase} ${job.phase === "fusing" ? percent : ""}`
    : job.state === "done" ? `done in ${job.run_s.toFixed(1)} s (queue wait ${job.queue_wait_s.toFixed(1)} s)`
    : job.state;
  $("cancel").disabled = !["queued", "running"].includes(job.state);
  if (job.state === "failed" || (job.state === "cancelled" && job.message)) showError(job.message);
}

async function refreshJobList() {
  const { jobs } = await (await api("/api/jobs")).json();
  const cells = (job) => [job.labels.a, job.labels.b, job.state, `${Math.round(job.progress * 100)}%`,
    job.queue_wait_s === null ? "" : `${job.queue_wait_s.toFixed(1)} s`, job.run_s === null ? "" : `${job.run_s.toFixed(1)} s`];
  $("jobs").tBodies[0].replaceChildren(...jobs.map((job) => {
    const row = document.createElement("tr");
    for (const text of cells(job)) row.insertCell().textContent = text;
    return row;
  }));
}

async function cancel() {
  if (!currentJob) return;
  $("cancel").disabled = true;
  try { showJob(await (await api(`/api/jobs/${currentJob}`, { method: "DELETE" })).json()); } catch (e) { showError(e.message); }
}

function newViewer(canvasId) {
  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1], show3Dcrosshair: false, isColorbar: false, loadingText: "",
    multiplanarLayout: niivue.MULTIPLANAR_TYPE.ROW, multiplanarShowRender: niivue.SHOW_RENDER.NEVER,
    isDragDropEnabled: false, crosshairWidth: 1,
  });
  nv.attachTo(canvasId);
  nv.setSliceType(nv.sliceTypeMultiplanar);
  return nv;
}

async function loadInto(nv, names) {
  while (nv.volumes.length) nv.removeVolumeByIndex(0);
  await nv.loadVolumes(names.map((name) => ({ url: buffers[name], name: `${name}.nii.gz` })));
}

function bindWindow(key, nv, index) {  // window/level sliders over the volume's full intensity range
  const volume = nv.volumes[index];
  const low = volume.global_min, high = volume.global_max;
  const level = $(`level-${key}`), width = $(`window-${key}`);
  Object.assign(level, { min: low, max: high, value: (volume.cal_min + volume.cal_max) / 2 });
  Object.assign(width, { min: (high - low) / 200, max: high - low, value: volume.cal_max - volume.cal_min });
  const apply = () => {
    const v = nv.volumes[index];
    v.cal_min = Number(level.value) - Number(width.value) / 2;
    v.cal_max = Number(level.value) + Number(width.value) / 2;
    nv.updateGLVolume();
  };
  level.oninput = apply; width.oninput = apply;
  const cmap = $(`cmap-${key}`);
  cmap.value = volume.colormap;
  cmap.onchange = () => { nv.volumes[index].colormap = cmap.value; nv.updateGLVolume(); };
}

async function showResult(job) {
  document.body.dataset.state = "loading-views";
  for (const name of ["a", "b", "fused"]) {
    if (buffers[name]) URL.revokeObjectURL(buffers[name]);
    buffers[name] = URL.createObjectURL(await (await api(`/api/jobs/${job.id}/view/${name}.nii.gz`)).blob());
  }
  $("views").hidden = false;
  $("download").disabled = false;
  $("label-a").textContent = job.labels.a;
  $("label-b").textContent = job.labels.b;
  for (const key of ["a", "b", "fused"]) views[key] = views[key] || newViewer(`view-${key}`);
  await loadInto(views.a, ["a"]);
  await loadInto(views.b, ["b"]);
  await showFusedOver($("base").value);
  bindWindow("a", views.a, 0);
  bindWindow("b", views.b, 0);
  const all = Object.values(views);
  for (const nv of all) nv.broadcastTo(all.filter((other) => other !== nv), { "2d": true, "3d": true });
  $("base").onchange = () => showFusedOver($("base").value);
  $("opacity").oninput = () => views.fused.setOpacity(1, Number($("opacity").value));
  document.body.dataset.state = "shown";
}

async function showFusedOver(base) {
  const nv = views.fused;
  await loadInto(nv, [base, "fused"]);
  const baseVolume = views[base].volumes[0];
  Object.assign(nv.volumes[0], { cal_min: baseVolume.cal_min, cal_max: baseVolume.cal_max, colormap: baseVolume.colormap });
  nv.setOpacity(1, Number($("opacity").value));
  bindWindow("fused", nv, 1);
  nv.updateGLVolume();
}

async function download() {
  const format = $("format").value;
  const response = await api(`/api/jobs/${currentJob}/result?format=${format}`);
  const name = (response.headers.get("Content-Disposition") || "").match(/filename="?([^";]+)/);
  const link = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(await response.blob()), download: name ? name[1] : `fused.${format}`,
  });
  link.click();
  $("status").textContent = "downloaded; the server has removed this job's files";
  $("download").disabled = true;
}

init().catch((error) => showError(error.message));
