// modelport's try-it page: lists the models (GET /api/models, /api/models/{name}) and calls them
// (POST /api/models/{name}/image, POST /v2/models/{name}/infer). Vanilla JS, no build step, nothing
// fetched from another host. Everything from the server is put on the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "modelport.token";
const FORM_LIMIT = 64; // per-row elements a form shows as fields; larger inputs use the JSON editor
const JSON_LIMIT = 100000; // elements the example V2 request is filled with; past it, one row is left empty
const SHOWN_VALUES = 50; // values shown per output in the answer table

const $ = (selector) => document.querySelector(selector);
const state = { models: [], info: {}, selected: null, shown: null };

// ---- small DOM helper: h("tag.class", {attr: value}, child, ...); strings become text nodes ----
function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

// ---- the server: every call carries the token when there is one; errors are the server's words ----
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function call(method, path, body, contentType) {
  const headers = new Headers();
  if (contentType) headers.set("Content-Type", contentType);
  if (token()) headers.set("Authorization", "Bearer " + token());
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, { method, body, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "cannot reach the server: " + err.message);
  }
  const text = await response.text();
  const ms = performance.now() - started;
  let data = null;
  try {
    data = JSON.parse(text);
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}: ${text.slice(0, 300)}`;
    throw new ApiError(response.status, message);
  }
  return { data, ms };
}

function showError(box, err) {
  box.hidden = false;
  box.textContent = err.message;
  if (err.status === 401 || err.status === 403) {
    box.textContent += "\nEnter the server's access token at the top of the page.";
  }
}

// ---- the token field: sessionStorage only, never in a snippet or the URL ----
function setupToken() {
  const input = $("#token");
  input.value = token();
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    else sessionStorage.removeItem(TOKEN_KEY);
    refresh(true);
  });
  $("#token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    refresh(true);
  });
}

// ---- the model list ----
function stateOf(model) {
  if (model.ready) return "ready";
  return model.error ? "failed" : "loading";
}

function badge(model) {
  const s = stateOf(model);
  return h("span.state." + s, { text: s, title: model.error || undefined });
}

function renderList() {
  const body = $("#models tbody");
  body.replaceChildren(
    ...state.models.map((m) =>
      h(
        "tr",
        { "aria-current": m.name === state.selected ? "true" : null, "data-model": m.name },
        h("td", {}, h("a", { href: "#model=" + encodeURIComponent(m.name), text: m.name })),
        h("td", {}, badge(m)),
        h("td", { text: m.format }),
        h("td", { text: versionsText(m) }),
      ),
    ),
  );
}

function versionsText(m) {
  const all = m.versions || [m.version];
  return all.length > 1 ? all.join(", ") + " (serving " + m.version + ")" : m.version;
}

async function refresh(force) {
  const status = $("#status");
  try {
    const { data } = await call("GET", "/api/models");
    state.models = data.models;
    const pending = state.models.filter((m) => !m.ready);
    status.textContent =
      state.models.length + " model" + (state.models.length === 1 ? "" : "s") +
      (pending.length ? `, ${pending.length} still loading (this page updates itself)` : ", all ready");
    status.classList.remove("error");
    if (pending.length) setTimeout(refresh, 2000);
  } catch (err) {
    status.textContent = err.message;
    status.classList.add("error");
    if (err.status === 401 || err.status === 403) status.textContent += " (Enter the access token above.)";
    return;
  }
  const wanted = decodeURIComponent((location.hash.match(/^#model=(.+)$/) || [])[1] || "");
  const names = state.models.map((m) => m.name);
  state.selected = names.includes(wanted) ? wanted : names.includes(state.selected) ? state.selected : names[0];
  renderList();
  if (state.selected) await showModel(state.selected, force);
}

// ---- one model: what it is ----
async function showModel(name, force) {
  const section = $("#model");
  let info;
  try {
    info = (await call("GET", "/api/models/" + encodeURIComponent(name))).data;
  } catch (err) {
    section.hidden = false;
    section.replaceChildren(h("h2#model-title", { text: name }), h("p.error", { role: "alert", text: err.message }));
    return;
  }
  const key = name + "/" + info.version + "/" + stateOf(info);
  if (!force && state.shown === key) return; // unchanged: keep what the user typed
  state.shown = key;
  state.info[name] = info;
  section.hidden = false;
  const parts = [
    h("h2", { id: "model-title", tabindex: "-1" }, info.name + " ", badge(info)),
    info.description ? h("p", { text: info.description }) : null,
    info.error ? h("p.error", { text: info.error }) : null,
    info.ready ? tryIt(info) : h("p.note", { text: "Try it once the model is ready." }),
    describe(info),
  ];
  section.replaceChildren(...parts.filter(Boolean));
}

function describe(info) {
  const facts = h("dl");
  const add = (term, value) => value !== undefined && value !== null && facts.append(h("dt", { text: term }), h("dd", {}, value));
  add("versions", versionsText(info));
  add("format", info.format + (info.platform && info.platform !== info.format ? " (" + info.platform + ")" : ""));
  if (info.max_batch_size !== undefined) add("max batch size", info.max_batch_size > 0 ? String(info.max_batch_size) : "none");
  if (info.source) {
    const conv = Object.entries(info.source.converters || {}).map(([k, v]) => k + " " + v).join(", ");
    add("source", info.source.format + (conv ? " (converted with " + conv + ")" : "") + (info.source.opset ? ", opset " + info.source.opset : ""));
  }
  if (info.parity) add("parity", parityText(info.parity));
  const parts = [h("h3", { text: "About this model" }), facts];
  parts.push(h("h3", { text: "Inputs" }), tensorTable(info.inputs || []));
  parts.push(h("h3", { text: "Outputs" }), tensorTable(info.outputs || []));
  if (info.image) {
    const i = info.image;
    const pre = h("dl");
    const row = (t, v) => pre.append(h("dt", { text: t }), h("dd", { text: v }));
    row("input", i.input + " (" + i.datatype + ", " + i.layout + ")");
    row("size", i.width + " × " + i.height + " " + i.color_mode);
    row("scale, mean, std", i.scale + ", [" + i.mean.join(", ") + "], [" + i.std.join(", ") + "]");
    row("how", i.how + (i.derived ? " (derived from the graph, not recorded at conversion)" : ""));
    parts.push(h("h3", { text: "Image preprocessing" }), pre);
  }
  if (info.labels && info.labels.length) {
    const list = h("ol", { start: "0" }, info.labels.map((l) => h("li", { text: l })));
    parts.push(
      h("h3", { text: "Labels" }),
      info.labels.length > 12 ? h("details", {}, h("summary", { text: info.labels.length + " labels" }), list) : list,
    );
  }
  return h("div", {}, parts);
}

function parityText(p) {
  if (!p.verified) return "not verified" + (p.samples ? " (the file loaded and ran on " + p.samples + " samples)" : "");
  let text = "verified against the source framework on " + p.samples + " samples: max abs error " + fmt(p.max_abs_error);
  if (p.max_rel_error !== undefined) text += ", max rel error " + fmt(p.max_rel_error);
  if (p.atol !== undefined) text += " (atol " + p.atol + ", rtol " + p.rtol + ")";
  if (p.label_agreement !== undefined) text += ", labels agree " + p.label_agreement;
  return text;
}

function fmt(x) {
  return typeof x === "number" ? Number(x.toPrecision(3)).toString() : String(x);
}

function tensorTable(specs) {
  return h(
    "div.scroll",
    {},
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["name", "datatype", "shape", "allowed values"].map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        specs.map((s) =>
          h(
            "tr",
            {},
            h("td", {}, h("code", { text: s.name })),
            h("td", { text: s.datatype }),
            h("td", { text: "[" + s.shape.join(", ") + "]" }),
            h("td", { text: (s.allowed_values || []).join(", ") }),
          ),
        ),
      ),
    ),
  );
}

// ---- one model: try it ----
function isImageModel(info) {
  return Boolean(info.image) && info.inputs.every((s) => s.name === info.image.input);
}

function tryIt(info) {
  const panel = h("div.panel", {}, h("h3", { text: "Try it" }));
  const result = h("div", { "aria-live": "polite" });
  const error = h("p.error", { role: "alert", hidden: true });
  const code = h("div.code");
  const ui = isImageModel(info) ? imageForm(info, result, error, code) : tensorForms(info, result, error, code);
  panel.append(...ui, error, result, code);
  return panel;
}

async function run(button, error, result, work) {
  button.disabled = true;
  error.hidden = true;
  try {
    await work();
  } catch (err) {
    result.replaceChildren();
    showError(error, err);
  } finally {
    button.disabled = false;
  }
}

function latency(ms) {
  return h("p.latency", { "data-ms": ms.toFixed(1), text: "Measured in the browser: " + ms.toFixed(1) + " ms round trip." });
}

// -- images: drop or choose a file, preview, top-k with score bars --
function imageForm(info, result, error, code) {
  let file = null;
  const input = h("input", { type: "file", id: "image-file", name: "image", accept: "image/*" });
  const preview = h("img.preview", { alt: "the chosen image", hidden: true });
  const topK = h("input", { type: "number", id: "top-k", min: "1", value: String(Math.min(5, (info.labels || []).length || 5)), class: "narrow" });
  const button = h("button", { type: "submit", text: "Classify" });
  const drop = h(
    "label.drop",
    { for: "image-file" },
    h("strong", { text: "Drop an image here" }),
    " or press to choose a file (" + info.image.width + " × " + info.image.height + " " + info.image.color_mode + " after resizing)",
    input,
  );
  const choose = (f) => {
    if (!f) return;
    file = f;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(f);
    preview.alt = "preview of " + f.name;
    preview.hidden = false;
    form.requestSubmit();
  };
  preview.addEventListener("error", () => (preview.hidden = true)); // not an image the browser shows
  input.addEventListener("change", () => choose(input.files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
  const form = h(
    "form",
    { id: "image-form" },
    drop,
    preview,
    h("div.row", {}, h("label", { for: "top-k", text: "top-k" }), topK, button),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!file) {
      showError(error, new Error("Choose an image first."));
      return;
    }
    const k = topK.value || "5";
    const path = "/api/models/" + encodeURIComponent(info.name) + "/image?top_k=" + encodeURIComponent(k);
    run(button, error, result, async () => {
      const body = new FormData();
      body.append("image", file, file.name);
      const { data, ms } = await call("POST", path, body);
      result.replaceChildren(h("h4", { text: "Answer" }), predictions(data), latency(ms));
      code.replaceChildren(...snippets(imageSnippets(info, path, file.name)));
    });
  });
  return [form];
}

function predictions(data) {
  if (!data.predictions) return outputsTable(Object.entries(data.outputs).map(([name, value]) => ({ name, data: value })));
  return h(
    "ol.top",
    { id: "predictions" },
    data.predictions.map((p) => {
      const bar = h("span");
      bar.style.width = Math.max(0, Math.min(100, p.score * 100)).toFixed(1) + "%";
      return h(
        "li",
        { "data-label": p.label ?? String(p.index), "data-score": String(p.score) },
        h("span.label", { text: p.label ?? "class " + p.index }),
        h("span.meter", { role: "img", "aria-label": (p.score * 100).toFixed(1) + "%" }, bar),
        h("span.score", { text: p.score.toFixed(4) }),
      );
    }),
  );
}

// -- tensors: a form generated from the inputs, and a JSON editor with a valid V2 request --
function rowShape(spec) {
  const batched = spec.shape.length > 0 && spec.shape[0] === -1;
  const dims = (batched ? spec.shape.slice(1) : spec.shape).map((d) => (d < 0 ? 1 : d));
  return { batched, dims, size: dims.reduce((a, b) => a * b, 1) };
}

function requestShape(spec) {
  const { batched, dims } = rowShape(spec);
  return batched ? [1, ...dims] : dims;
}

function example(spec) {
  if (spec.allowed_values && spec.allowed_values.length) return spec.allowed_values[0];
  if (spec.datatype === "BOOL") return false;
  if (spec.datatype === "BYTES") return "";
  return 0;
}

function parseValue(spec, raw) {
  // Sent as typed when it is not a number, so the server's own message names the input.
  if (spec.datatype === "BYTES") return raw;
  if (spec.datatype === "BOOL") return raw;
  const text = raw.trim();
  if (text === "") return null;
  const n = Number(text);
  return Number.isFinite(n) ? n : raw;
}

function fieldFor(spec, index, size, id) {
  const label = size === 1 ? spec.name : spec.name + "[" + index + "]";
  if (spec.allowed_values && spec.allowed_values.length) {
    return h("label", { for: id }, label, h("select", { id, "data-input": spec.name }, spec.allowed_values.map((v) => h("option", { value: v, text: v }))));
  }
  if (spec.datatype === "BOOL") {
    return h("label", { for: id }, label, h("input", { id, type: "checkbox", "data-input": spec.name }));
  }
  const numeric = spec.datatype !== "BYTES";
  return h(
    "label",
    { for: id },
    label + (numeric ? " (" + spec.datatype + ")" : ""),
    h("input", { id, type: "text", inputmode: numeric ? "decimal" : null, value: String(example(spec)), "data-input": spec.name, autocomplete: "off", spellcheck: "false" }),
  );
}

function tensorForms(info, result, error, code) {
  const path = "/v2/models/" + encodeURIComponent(info.name) + "/infer";
  const editor = h("textarea", { id: "v2-json", spellcheck: "false", rows: "10" });
  editor.value = pretty(exampleRequest(info));
  const send = async (body, button) =>
    run(button, error, result, async () => {
      const { data, ms } = await call("POST", path, body, "application/json");
      result.replaceChildren(h("h4", { text: "Answer" }), outputsTable(data.outputs), latency(ms));
      let parsed = null;
      try {
        parsed = JSON.parse(body);
      } catch (err) {
        parsed = null;
      }
      code.replaceChildren(...snippets(tensorSnippets(info, path, body, parsed)));
    });

  const parts = [];
  const formable = info.inputs.filter((s) => rowShape(s).size <= FORM_LIMIT && rowShape(s).dims.length <= 1);
  if (formable.length === info.inputs.length) {
    const submit = h("button", { type: "submit", text: "Predict" });
    const form = h(
      "form",
      { id: "tensor-form" },
      // single-value inputs (tabular fields) share one grid; each vector input gets its own fieldset
      h("div.fields", {}, info.inputs.map((spec, i) => (rowShape(spec).size === 1 ? fieldFor(spec, 0, 1, `in-${i}-0`) : null))),
      info.inputs.map((spec, i) => {
        const size = rowShape(spec).size;
        if (size === 1) return null;
        const fields = Array.from({ length: size }, (_, j) => fieldFor(spec, j, size, `in-${i}-${j}`));
        return h("fieldset", {}, h("legend", { text: spec.name + " (" + size + " " + spec.datatype + ")" }), h("div.fields", {}, fields));
      }),
      h("div.row", {}, submit, h("span.note", { text: "Sends one row to " + path + " (V2 JSON)." })),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = JSON.stringify(formRequest(info, form));
      editor.value = pretty(JSON.parse(body));
      send(body, submit);
    });
    parts.push(form);
  } else {
    parts.push(h("p.note", { text: "These inputs are too large for a form: edit the V2 request below." }));
  }
  const sendJson = h("button", { type: "button", id: "send-json", text: "Send JSON" });
  sendJson.addEventListener("click", () => send(editor.value, sendJson));
  parts.push(
    h(
      "details",
      { open: formable.length === info.inputs.length ? null : true },
      h("summary", { text: "V2 request as JSON (for anything the form cannot express)" }),
      h("label", { for: "v2-json", class: "note", text: "POST " + path + " body:" }),
      editor,
      h("div.row", {}, sendJson),
    ),
  );
  return parts;
}

function pretty(value) {
  // Indented, but each array of plain values (a shape, a tensor's data) on one line. JSON strings
  // hold no raw newline, so removing newline + indent never touches a value.
  return JSON.stringify(value, null, 2).replace(/\[[^[\]{}]*\]/g, (m) => m.replace(/,\n\s*/g, ", ").replace(/\n\s*/g, ""));
}

function exampleRequest(info) {
  return {
    inputs: info.inputs.map((spec) => {
      const shape = requestShape(spec);
      const count = shape.reduce((a, b) => a * b, 1);
      return { name: spec.name, shape, datatype: spec.datatype, data: count <= JSON_LIMIT ? Array(count).fill(example(spec)) : [] };
    }),
  };
}

function formRequest(info, form) {
  return {
    inputs: info.inputs.map((spec) => {
      const data = [...form.querySelectorAll("[data-input]")]
        .filter((el) => el.dataset.input === spec.name)
        .map((el) => (el.type === "checkbox" ? el.checked : parseValue(spec, el.value)));
      return { name: spec.name, shape: requestShape(spec), datatype: spec.datatype, data };
    }),
  };
}

function outputsTable(outputs) {
  return h(
    "div.scroll",
    {},
    h(
      "table",
      { id: "outputs" },
      h("thead", {}, h("tr", {}, ["output", "datatype", "shape", "values"].map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        outputs.map((o) => {
          const flat = Array.isArray(o.data) ? o.data.flat(Infinity) : [o.data];
          const shown = flat.slice(0, SHOWN_VALUES).map(String).join(", ");
          const more = flat.length > SHOWN_VALUES ? " … (" + (flat.length - SHOWN_VALUES) + " more)" : "";
          return h(
            "tr",
            { "data-output": o.name },
            h("td", {}, h("code", { text: o.name })),
            h("td", { text: o.datatype || "" }),
            h("td", { text: o.shape ? "[" + o.shape.join(", ") + "]" : "" }),
            h("td.num", { "data-values": JSON.stringify(flat.slice(0, SHOWN_VALUES)), text: shown + more }),
          );
        }),
      ),
    ),
  );
}

// ---- the same request as code: curl, Python requests, tritonclient ----
// The token is never written into a snippet: they read it from $MODELPORT_TOKEN.
function base() {
  return location.protocol + "//" + location.host;
}

function shellQuote(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

function py(value, indent) {
  // JSON -> a Python literal (True/False/None); strings keep JSON's escapes, which Python reads alike.
  const pad = indent === undefined ? null : "    ".repeat(indent + 1);
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    const objects = value.some((v) => v !== null && typeof v === "object" && !Array.isArray(v));
    if (pad === null || !objects) return "[" + value.map((v) => py(v)).join(", ") + "]";
    return "[\n" + value.map((v) => pad + py(v, indent + 1)).join(",\n") + ",\n" + "    ".repeat(indent) + "]";
  }
  const items = Object.entries(value).map(([k, v]) => JSON.stringify(k) + ": " + py(v, indent === undefined ? undefined : indent + 1));
  if (pad === null) return "{" + items.join(", ") + "}";
  return "{\n" + items.map((i) => pad + i).join(",\n") + ",\n" + "    ".repeat(indent) + "}";
}

function authLines() {
  if (!token()) return { curl: "", header: "", pyImport: "", pyHeaders: "", triton: "" };
  return {
    curl: ' \\\n  -H "Authorization: Bearer $MODELPORT_TOKEN"',
    header: "# export MODELPORT_TOKEN=... (the token you entered above)\n",
    pyImport: "import os\n",
    pyHeaders: ', headers={"Authorization": "Bearer " + os.environ["MODELPORT_TOKEN"]}',
    triton: ', headers={"Authorization": "Bearer " + os.environ["MODELPORT_TOKEN"]}',
  };
}

function tritonHead(auth) {
  return (
    auth.header + auth.pyImport + "import numpy as np\nimport tritonclient.http as httpclient\n" +
    "from tritonclient.utils import triton_to_np_dtype\n\n" +
    "client = httpclient.InferenceServerClient(" + JSON.stringify(location.host) + ")\n"
  );
}

function tensorSnippets(info, path, body, parsed) {
  const auth = authLines();
  const url = base() + path;
  const curl = auth.header + "curl -s " + shellQuote(url) + " \\\n  -H 'Content-Type: application/json'" + auth.curl + " \\\n  -d " + shellQuote(body);
  const requestsCode =
    auth.header + auth.pyImport + "import requests\n\nbody = " + (parsed ? py(parsed, 0) : "... # the JSON above is not valid") +
    "\nresponse = requests.post(" + JSON.stringify(url) + ", json=body, timeout=30" + auth.pyHeaders + ")\n\nprint(response.status_code, response.json())\n";
  let triton = null;
  if (parsed && Array.isArray(parsed.inputs)) {
    const lines = [tritonHead(auth) + "inputs = []"];
    for (const input of parsed.inputs) {
      lines.push(
        "inputs.append(httpclient.InferInput(" + JSON.stringify(input.name) + ", " + py(input.shape) + ", " + JSON.stringify(input.datatype) + "))",
        "inputs[-1].set_data_from_numpy(np.array(" + py(input.data) + ", dtype=triton_to_np_dtype(" + JSON.stringify(input.datatype) + ")).reshape(" + py(input.shape) + "))",
      );
    }
    lines.push("result = client.infer(" + JSON.stringify(info.name) + ", inputs" + auth.triton + ")");
    for (const o of info.outputs) lines.push("print(" + JSON.stringify(o.name) + ", result.as_numpy(" + JSON.stringify(o.name) + ").tolist())");
    triton = lines.join("\n") + "\n";
  }
  return [
    ["curl", curl],
    ["Python requests", requestsCode],
    ["tritonclient", triton],
  ];
}

function imageSnippets(info, path, filename) {
  const auth = authLines();
  const url = base() + path;
  const name = JSON.stringify(filename);
  const curl = auth.header + "curl -s -F " + shellQuote("image=@" + filename) + auth.curl + " \\\n  " + shellQuote(url);
  const requestsCode =
    auth.header + auth.pyImport + "import requests\n\nwith open(" + name + ', "rb") as f:\n' +
    "    response = requests.post(\n        " + JSON.stringify(url) + ',\n        files={"image": (' + name + ", f)},\n        timeout=30" + auth.pyHeaders + ",\n    )\n" +
    'print(response.status_code, response.json()["predictions"])\n';
  const triton =
    tritonHead(auth) + "\n# the encoded file as a BYTES tensor; the server decodes and preprocesses it as above\n" +
    "with open(" + name + ', "rb") as f:\n    image = np.array([f.read()], dtype=np.object_)\n' +
    "inputs = [httpclient.InferInput(" + JSON.stringify(info.image.input) + ', [1], "BYTES")]\n' +
    "inputs[0].set_data_from_numpy(image, binary_data=True)\n" +
    "result = client.infer(" + JSON.stringify(info.name) + ", inputs" + auth.triton + ")\n" +
    info.outputs.map((o) => "print(" + JSON.stringify(o.name) + ", result.as_numpy(" + JSON.stringify(o.name) + ").tolist())").join("\n") + "\n";
  return [
    ["curl", curl],
    ["Python requests", requestsCode],
    ["tritonclient", triton],
  ];
}

function snippets(list) {
  const out = [h("h4", { text: "The same request as code" })];
  for (const [title, text] of list) {
    if (!text) continue;
    const pre = h("pre", { "data-lang": title, tabindex: "0", "aria-label": title + " code" }, h("code", { text }));
    const copy = h("button.plain", { type: "button", text: "Copy", "aria-label": "Copy the " + title + " code" });
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(text);
        copy.textContent = "Copied";
      } catch (err) {
        copy.textContent = "Select and copy";
      }
    });
    out.push(h("h4", {}, h("span", { text: title }), copy), pre);
  }
  return out;
}

// ---- start ----
window.addEventListener("hashchange", async () => {
  await refresh(false);
  const title = document.getElementById("model-title");
  if (title) title.focus();
});
setupToken();
refresh(false);
