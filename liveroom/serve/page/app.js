// The forecast page: two pitches side by side, each a form and its forecast.
// Plain JS, no build step. Talks to POST /v1/forecast and GET /v1/model only, in JSON, with the
// server's token (asked for when the API answers 401, kept for this tab only) when it has one.
"use strict";

const TARGETS = ["log_gmv", "log_deal_order_cnt", "log_live_deal_user_cnt", "log_watch_user_cnt"];
const TARGET_NAMES = { log_gmv: "GMV", log_deal_order_cnt: "orders", log_live_deal_user_cnt: "buyers",
  log_watch_user_cnt: "viewers" };
const SCORES = ["entry", "state", "action", "read"];
const FIELDS = ["start", "title", "prod", "text", "duration", "user_cnt", "showcase"];
const EXAMPLE = {
  start: "2024-03-08 20:00", title: "女神节宠粉专场", prod: "加厚保暖羊毛袜", duration: "3", user_cnt: "12000",
  text: "家人们看过来，这款羊毛袜加厚保暖，今天直播间三双只要二十九块九，库存不多，拍完就没有了。",
  showcase: "加厚保暖羊毛袜, 29.9\n羊绒围巾, 259\n真丝睡衣两件套, 399",
};

const state = { personas: {}, results: {}, token: sessionStorage.getItem("liveroom-token") || "" };

// ------------------------------------------------------------------ the API

/** fetch() of an API path with the token, if one is known; a 401 asks the user for it. */
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) askToken(state.token ? "that token was refused; enter this server's token" : "");
  return resp;
}

function askToken(message) {
  const form = document.getElementById("token-form");
  form.hidden = false;
  form.querySelector(".token-error").textContent = message;
  document.body.dataset.auth = "needed";
}

// ------------------------------------------------------------------ numbers as shown

function withCommas(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** A count: whole with thousands separators from 100 up, one decimal below. */
function fmtCount(x) {
  if (Math.abs(x) >= 100) {
    const s = Math.round(x).toFixed(0);
    return s.startsWith("-") ? "-" + withCommas(s.slice(1)) : withCommas(s);
  }
  return x.toFixed(1);
}

const fmtLog = (x) => x.toFixed(3);
const fmtShare = (p) => (100 * p).toFixed(1) + "%";
const fmtScore = (s) => (Number.isInteger(s) ? String(s) : s.toFixed(2));

// ------------------------------------------------------------------ the form

/** The pitch in a form, as the API takes it; throws {field, message} for a showcase line it cannot read. */
function readForm(form) {
  const value = (name) => form.elements[name].value;
  const number = (name) => {
    const text = value(name).trim();
    return text !== "" && Number.isFinite(Number(text)) ? Number(text) : text; // the server names bad ones
  };
  const showcase = [];
  value("showcase").split("\n").forEach((line, n) => {
    if (!line.trim()) return;
    const cut = Math.max(line.lastIndexOf(","), line.lastIndexOf("，"));
    const price = cut < 0 ? NaN : Number(line.slice(cut + 1).trim());
    if (cut < 0 || !line.slice(0, cut).trim() || !Number.isFinite(price)) {
      throw { field: "showcase", message: `line ${n + 1}: expected "name, price", got "${line.trim()}"` };
    }
    showcase.push([showcase.length, line.slice(0, cut).trim(), price]);
  });
  return { start: value("start").trim(), title: value("title"), prod: value("prod"), text: value("text"),
    duration: number("duration"), user_cnt: number("user_cnt"), showcase };
}

function fillForm(form, values) {
  for (const name of FIELDS) form.elements[name].value = values[name] ?? "";
}

function formValues(form) {
  return Object.fromEntries(FIELDS.map((name) => [name, form.elements[name].value]));
}

function showError(col, field, message) {
  const form = col.querySelector("form");
  form.querySelectorAll(".bad").forEach((el) => el.classList.remove("bad"));
  const input = field && form.elements[field.replace(/^.*\./, "")];
  if (input) input.classList.add("bad");
  form.querySelector(".form-error").textContent = field ? `${field}: ${message}` : message;
}

// ------------------------------------------------------------------ charts

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One row per persona: its name, then a bar per series (width = value / top) with the value shown. */
function barChart(box, rows, series, top, fmt) {
  box.replaceChildren();
  for (const [key, values] of rows) {
    const row = el("div", "bar-row");
    row.dataset.persona = key;
    const name = el("span", "bar-name", state.personas[key] || key);
    name.title = key;
    row.append(name);
    const bars = el("div", "bars");
    for (const s of series) {
      const line = el("div", "bar-line");
      const bar = el("i", "bar " + s);
      bar.style.width = `calc((100% - 44px) * ${Math.max(0, Math.min(1, values[s] / top))})`; // room for the number
      const num = el("b", "bar-value", fmt(values[s]));
      num.dataset.series = s;
      line.append(bar, num);
      bars.append(line);
    }
    row.append(bars);
    box.append(row);
  }
}

// ------------------------------------------------------------------ a result

function render(col, result, seconds) {
  const p = result.prediction;
  for (const t of TARGETS) {
    col.querySelector(`[data-target="${t}"]`).textContent = fmtCount(Math.expm1(p[t]));
    col.querySelector(`[data-log="${t}"]`).textContent = fmtLog(p[t]);
  }
  const keys = Object.keys(p.watch_share);
  const shares = keys.map((k) => [k, { watch: p.watch_share[k], pay: p.pay_share[k] }]);
  const top = Math.max(...shares.flatMap(([, v]) => [v.watch, v.pay]), 1e-9);
  barChart(col.querySelector(".chart.shares"), shares, ["watch", "pay"], top, fmtShare);
  const scores = keys.map((k) => [k, Object.fromEntries(SCORES.map((s) => [s, result.scores[s][k]]))]);
  barChart(col.querySelector(".chart.scores"), scores, SCORES, 5, fmtScore);
  const m = result.model;
  col.querySelector(".meta").textContent =
    `${result.requests_sent} request(s) sent · ${seconds.toFixed(2)} s · pitch ${result.index.toString(16).padStart(13, "0")} · ` +
    `model ${m.dir} (${m.inputs}, best epoch ${m.best_epoch}) · questions to ${m.llm}`;
  col.dataset.state = "done";
  state.results[col.id] = result;
  compare();
}

function compare() {
  const a = state.results.A, b = state.results.B;
  const box = document.getElementById("compare");
  if (!a || !b) { box.hidden = true; return; }
  const row = document.getElementById("compare-row");
  row.replaceChildren();
  for (const t of TARGETS) {
    const va = Math.expm1(a.prediction[t]), vb = Math.expm1(b.prediction[t]);
    const change = va !== 0 ? (vb - va) / Math.abs(va) : 0;
    const cell = el("div", "delta " + (change > 0.005 ? "up" : change < -0.005 ? "down" : "same"));
    cell.append(el("span", "label", TARGET_NAMES[t]),
      el("span", "value", (change >= 0 ? "+" : "−") + Math.abs(100 * change).toFixed(1) + "%"),
      el("span", "log", `${fmtCount(va)} → ${fmtCount(vb)}`));
    row.append(cell);
  }
  box.hidden = false;
}

async function forecast(col) {
  const form = col.querySelector("form");
  const button = form.querySelector(".go");
  let pitch;
  try {
    pitch = readForm(form);
  } catch (e) {
    showError(col, e.field, e.message);
    return;
  }
  showError(col, null, "");
  col.querySelector(".placeholder").textContent = "Asking the personas…";
  button.disabled = true;
  button.textContent = "Forecasting…";
  col.dataset.state = "loading";
  const t0 = performance.now();
  try {
    const resp = await api("/v1/forecast", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(pitch) });
    const body = await resp.json().catch(() => ({ error: { message: `HTTP ${resp.status}` } }));
    if (!resp.ok) {
      showError(col, body.error && body.error.field, (body.error && body.error.message) || `HTTP ${resp.status}`);
      col.dataset.state = "error";
      return;
    }
    render(col, body, (performance.now() - t0) / 1000);
  } catch (e) {
    showError(col, null, `no answer from the server: ${e.message}`);
    col.dataset.state = "error";
  } finally {
    button.disabled = false;
    button.textContent = `Forecast ${col.id}`;
  }
}

// ------------------------------------------------------------------ set-up

function column(name, other) {
  const col = document.getElementById("pitch-template").content.firstElementChild.cloneNode(true);
  col.id = name;
  col.classList.add("pitch-" + name.toLowerCase());
  col.querySelector(".pitch-name").textContent = `Pitch ${name}`;
  col.querySelector(".go").textContent = `Forecast ${name}`;
  const copy = col.querySelector(".copy");
  copy.textContent = `copy to ${other} →`;
  copy.addEventListener("click", () => fillForm(document.getElementById(other).querySelector("form"),
    formValues(col.querySelector("form"))));
  col.querySelector("form").addEventListener("submit", (e) => { e.preventDefault(); forecast(col); });
  return col;
}

async function loadModel() {
  const line = document.getElementById("model-line");
  try {
    const resp = await api("/v1/model");
    if (resp.status === 401) {
      line.textContent = "this server needs its token to forecast";
      return;
    }
    const info = await resp.json();
    state.personas = info.persona_names || {};
    const test = info.test || {};
    const rmse = test.rmse_log_gmv === undefined ? "" : ` · test RMSE log_gmv ${test.rmse_log_gmv.toFixed(3)}`;
    line.textContent =
      `model ${info.dir} (${info.inputs}, best epoch ${info.best_epoch}${rmse}) · ` +
      `${info.questions.per_pitch} questions per pitch to ${info.questions.model} · ` +
      `${info.cache.answers} answers cached`;
  } catch (e) {
    line.textContent = `model info unavailable: ${e.message}`;
  }
}

async function start() {
  const columns = document.getElementById("columns");
  columns.append(column("A", "B"), column("B", "A"));
  fillForm(document.querySelector("#A form"), EXAMPLE);
  document.getElementById("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.token = e.target.elements.token.value.trim();
    sessionStorage.setItem("liveroom-token", state.token);
    e.target.hidden = true;
    document.body.dataset.auth = "";
    await loadModel();
  });
  await loadModel();
  window.liveroomReady = true;
}

start();
