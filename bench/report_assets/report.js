// report.html's behaviour: R-D plot (Plotly) and the progressive viewer. Reads the JSON in
// #bench-data; exposes window.benchReport = {data, state} so tests can read the page's state.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("bench-data").textContent);
  const state = { metric: "psnr_rgb", scope: "aggregated", hidden: {},
                  image: null, target: 0, mode: "recon", split: 50, zoom: 1 };
  window.benchReport = { data, state };
  const $ = (id) => document.getElementById(id);
  const fmt = (v, d) => (v === null || v === undefined ? "n/a" : v.toFixed(d));

  function option(select, value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.appendChild(o);
  }

  // ---- R-D plot ----
  function traces() {
    const byCodec = data.curves[state.scope] || {};
    const label = data.metrics[state.metric];
    return Object.keys(data.curves.aggregated).map((codec) => {
      const pts = byCodec[codec] || [];
      return {
        name: codec, type: "scatter", mode: "lines+markers",
        x: pts.map((p) => p.bpp), y: pts.map((p) => p[state.metric]),
        customdata: pts.map((p) => [p.target, p.n_images]),
        line: { dash: data.kinds[codec] === "non-progressive anchor (rate ladder)" ? "dash" : "solid" },
        marker: { size: 5 },
        visible: state.hidden[codec] ? "legendonly" : true,
        hovertemplate: "<b>" + codec + "</b><br>target %{customdata[0]} bpp<br>actual %{x:.4f} bpp<br>" +
          label + " %{y:.4f}<br>%{customdata[1]} image(s)<extra></extra>",
      };
    });
  }

  function drawPlot() {
    const layout = {
      margin: { t: 30, r: 10 },
      title: { text: state.scope === "aggregated" ? "aggregated (mean over images)" : state.scope },
      xaxis: { title: { text: "bits per pixel" } },
      yaxis: { title: { text: data.metrics[state.metric] } },
      hovermode: "closest",
    };
    Plotly.react("rd-plot", traces(), layout, { displaylogo: false, responsive: true });
  }

  function setupPlot() {
    for (const [key, text] of Object.entries(data.metrics)) option($("rd-metric"), key, text);
    option($("rd-scope"), "aggregated", "aggregated");
    for (const image of Object.keys(data.curves)) {
      if (image !== "aggregated") option($("rd-scope"), image, image);
    }
    $("rd-metric").addEventListener("change", (e) => { state.metric = e.target.value; drawPlot(); });
    $("rd-scope").addEventListener("change", (e) => { state.scope = e.target.value; drawPlot(); });
    drawPlot();
    $("rd-plot").on("plotly_restyle", () => {
      for (const trace of $("rd-plot").data) state.hidden[trace.name] = trace.visible === "legendonly";
    });
  }

  // ---- progressive viewer ----
  const viewer = data.viewer;
  const panels = {};
  const synced = { left: 0, top: 0 };  // the scroll position every panel was last given

  function element(tag, className) {
    const node = document.createElement(tag);
    node.className = className;
    return node;
  }

  function makePanel(codec) {
    const panel = element("div", "panel");
    panel.dataset.codec = codec;
    const title = document.createElement("h3");
    title.textContent = codec;
    const viewport = element("div", "viewport");
    const stage = element("div", "stage");
    const original = element("img", "original");
    original.alt = "original";
    const recon = element("img", "recon");
    recon.alt = codec + " reconstruction";
    const divider = element("div", "divider");
    const missing = element("div", "missing");
    const caption = element("div", "caption");
    stage.append(original, recon, divider, missing);
    viewport.appendChild(stage);
    panel.append(title, viewport, caption);
    $("viewer-panels").appendChild(panel);
    viewport.addEventListener("scroll", () => syncScroll(viewport));
    let drag = null;
    viewport.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, left: viewport.scrollLeft, top: viewport.scrollTop };
      viewport.classList.add("dragging");
      viewport.setPointerCapture(e.pointerId);
    });
    viewport.addEventListener("pointermove", (e) => {
      if (!drag) return;
      viewport.scrollLeft = drag.left - (e.clientX - drag.x);
      viewport.scrollTop = drag.top - (e.clientY - drag.y);
    });
    const stop = () => { drag = null; viewport.classList.remove("dragging"); };
    viewport.addEventListener("pointerup", stop);
    viewport.addEventListener("pointercancel", stop);
    panels[codec] = { panel, viewport, stage, original, recon, divider, missing, caption };
  }

  // Panels echo the scroll events that syncing causes; an echo carries the position already
  // given to all, so it stops there.
  function syncScroll(source) {
    const left = source.scrollLeft;
    const top = source.scrollTop;
    if (left === synced.left && top === synced.top) return;
    synced.left = left;
    synced.top = top;
    for (const p of Object.values(panels)) {
      if (p.viewport !== source) {
        p.viewport.scrollLeft = left;
        p.viewport.scrollTop = top;
      }
    }
  }

  function currentImage() {
    return viewer.images.find((i) => i.name === state.image);
  }

  function showViewer() {
    const image = currentImage();
    const target = viewer.targets[state.target];
    $("viewer-target").textContent = target + " bpp";
    $("split-control").hidden = state.mode !== "split";
    for (const button of document.querySelectorAll("button.zoom")) {
      button.classList.toggle("active", Number(button.dataset.zoom) === state.zoom);
    }
    for (const codec of viewer.codecs) {
      const p = panels[codec];
      const cell = (viewer.cells[image.name][codec] || [])[state.target];
      const w = image.width * state.zoom;
      const h = image.height * state.zoom;
      p.stage.style.width = w + "px";
      p.stage.style.height = h + "px";
      p.viewport.style.height = h + 2 + "px";
      p.viewport.style.maxWidth = w + 2 + "px";
      if (image.original) p.original.src = image.original;
      p.original.hidden = !image.original;
      const file = cell && cell.decodable ? cell.file : null;
      if (file) p.recon.src = file;
      else p.recon.removeAttribute("src");
      p.recon.hidden = !file || state.mode === "original";
      p.recon.style.clipPath = state.mode === "split" ? "inset(0 0 0 " + state.split + "%)" : "none";
      p.divider.hidden = state.mode !== "split";
      p.divider.style.left = state.split + "%";
      p.missing.hidden = Boolean(file) && state.mode !== "original";
      p.missing.textContent = state.mode === "original" ? "original" :
        !cell ? "no row (unit failed or not run)" :
        !cell.decodable ? "not decodable at this budget (" + (cell.note || "nothing fits") + ")" :
        "reconstruction not saved";
      p.caption.textContent = !cell ? "" :
        "target " + target + " bpp: " + fmt(cell.bpp, 4) + " bpp (" + cell.bytes.toLocaleString("en") +
        " bytes), PSNR-RGB " + fmt(cell.psnr_rgb, 2) + " dB, PSNR-Y " + fmt(cell.psnr_y, 2) +
        " dB, MS-SSIM " + fmt(cell.ms_ssim, 4) + (cell.setting ? ", ladder setting " + cell.setting : "");
    }
    const first = panels[viewer.codecs[0]];
    if (first) syncScroll(first.viewport);
  }

  function setupViewer() {
    if (!viewer.images.length) {
      $("viewer-empty").hidden = false;
      $("viewer-ui").hidden = true;
      return;
    }
    for (const image of viewer.images) option($("viewer-image"), image.name, image.name);
    state.image = viewer.images[0].name;
    for (const codec of viewer.codecs) makePanel(codec);
    const slider = $("viewer-slider");
    slider.max = viewer.targets.length - 1;
    slider.addEventListener("input", () => { state.target = Number(slider.value); showViewer(); });
    $("viewer-image").addEventListener("change", (e) => { state.image = e.target.value; showViewer(); });
    for (const radio of document.querySelectorAll("input[name=viewer-mode]")) {
      radio.addEventListener("change", () => { state.mode = radio.value; showViewer(); });
    }
    const flip = () => {
      state.mode = state.mode === "original" ? "recon" : "original";
      document.querySelector("input[name=viewer-mode][value=" + state.mode + "]").checked = true;
      showViewer();
    };
    $("viewer-flip").addEventListener("click", flip);
    document.addEventListener("keydown", (e) => {
      if (e.key === "f" && e.target.tagName !== "INPUT" && e.target.tagName !== "SELECT") flip();
    });
    $("viewer-split").addEventListener("input", (e) => { state.split = Number(e.target.value); showViewer(); });
    for (const button of document.querySelectorAll("button.zoom")) {
      button.addEventListener("click", () => {
        const p = panels[viewer.codecs[0]].viewport;
        const cx = (p.scrollLeft + p.clientWidth / 2) / state.zoom;
        const cy = (p.scrollTop + p.clientHeight / 2) / state.zoom;
        state.zoom = Number(button.dataset.zoom);
        showViewer();
        p.scrollLeft = cx * state.zoom - p.clientWidth / 2;
        p.scrollTop = cy * state.zoom - p.clientHeight / 2;
        syncScroll(p);
      });
    }
    showViewer();
  }

  if (typeof Plotly === "undefined") {  // e.g. a committed run folder: bundles are not committed
    $("rd-plot").textContent = "plotly.min.js is missing beside this page; `bench report " +
      "<run folder>` writes it again. The tables below and the viewer work without it.";
  } else {
    setupPlot();
  }
  setupViewer();
})();
