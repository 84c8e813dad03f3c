// The operators' dashboard, served at /admin by graph/http/admin.py; its data
// comes from the admin operations of /graphql (CONTRACT §9).
//
// Safety rules of this file:
// - every user-supplied string (usernames, request data, error text) goes into
//   the page as text (textContent, text nodes, attribute values), never as HTML;
// - the token lives in sessionStorage only (gone when the tab closes), and is
//   kept only for an account whose role is ADMIN.

const GRAPHQL_URL = new URL("../graphql", import.meta.url);
const TOKEN_KEY = "userqueue.admin.token";
const POLL_MS = 2000;
const WINDOW_SECONDS = 15 * 60;

const LOGIN = `mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) { token }
}`;
const ME = `query Me { me { username role } }`;
const SET_LIMITS = `mutation SetUserLimits($username: String!, $limits: UserLimitsInput!) {
  setUserLimits(username: $username, limits: $limits) { concurrency weight startsPerMinute paused }
}`;
const RETRY_JOB = `mutation RetryJob($id: ID!) { retryJob(id: $id) { id status } }`;
const RETRY_FAILED = `mutation RetryFailed($username: String) { retryFailed(username: $username) }`;

// ThroughputPoint.queued (queued depth per bucket) is asked for while the
// server knows it; without it the depth chart samples adminOverview.queued.
function dashboardQuery(withQueued) {
  return `query Dashboard {
  adminOverview {
    users usersWaiting queued processing scheduled
    completedLastMinute failedLastMinute oldestWaitSeconds
  }
  adminThroughput(minutes: 15) { at enqueued completed failed${withQueued ? " queued" : ""} }
  adminUsers(first: 10, orderBy: BACKLOG) {
    edges { node {
      user { username }
      queued processing scheduled failed oldestQueuedAt
      limits { concurrency weight startsPerMinute paused }
    } }
  }
  adminJobs(status: FAILED, first: 20) {
    edges { node { id requestData error attempts finishedAt owner { username } } }
  }
}`;
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

async function gql(query, variables = {}, token = session.token) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(GRAPHQL_URL, {
      method: "POST", headers, body: JSON.stringify({ query, variables }),
      cache: "no-store", credentials: "omit",
    });
  } catch {
    throw new ApiError("The API cannot be reached.", "NETWORK");
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`The API answered HTTP ${response.status}.`, "HTTP");
  }
  if (body.errors && body.errors.length) {
    const [error] = body.errors;
    throw new ApiError(String(error.message), error.extensions && error.extensions.code);
  }
  if (!body.data) throw new ApiError(`The API answered HTTP ${response.status}.`, "HTTP");
  return body.data;
}

const session = { token: sessionStorage.getItem(TOKEN_KEY), username: null };

function keepToken(token) {
  session.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
}

function forgetToken() {
  session.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
}

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

// h("td", {class: "num", text: value}, child...): an element; strings become text nodes.
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "onclick") el.addEventListener("click", value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.filter((child) => child != null && child !== false));
  return el;
}

// Replace a list's children by the rows of `items`, rebuilding only rows whose
// content changed, so a button under the pointer survives a refresh.
function renderRows(parent, cache, items, key, build) {
  const rows = items.map((item) => {
    const built = build(item);
    const old = cache.get(key(item));
    if (old && old.signature === built.signature) return old;
    return built;
  });
  cache.clear();
  items.forEach((item, i) => cache.set(key(item), rows[i]));
  const nodes = rows.map((row) => row.node);
  const same = nodes.length === parent.children.length
    && nodes.every((node, i) => parent.children[i] === node);
  if (!same) parent.replaceChildren(...nodes);
}

const integer = new Intl.NumberFormat();
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function ago(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  return seconds < 5 ? "just now" : `${duration(seconds)} ago`;
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function toast(message, kind = "ok") {
  const el = h("div", { class: `toast toast-${kind}`, text: message });
  $("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

// ---------------------------------------------------------------- views

function show(view) {
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  for (const id of ["signin", "denied", "dashboard"]) $(id).hidden = id !== view;
  $("session").hidden = view !== "dashboard";
}

function showSignIn(message) {
  stopPolling();
  show("signin");
  const error = $("signin-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("username").focus();
}

function showDenied(username) {
  stopPolling();
  forgetToken();
  $("denied-text").textContent = `You are signed in as ${username}, which is not an admin, so this page shows no data.`;
  show("denied");
}

async function whoAmI(token) {
  return (await gql(ME, {}, token)).me;
}

async function signIn(event) {
  event.preventDefault();
  const submit = $("signin-submit");
  const username = $("username").value.trim();
  const password = $("password").value;
  if (!username || !password) return showSignIn("Enter your username and password.");
  submit.disabled = true;
  try {
    const { login } = await gql(LOGIN, { username, password }, null);
    const me = await whoAmI(login.token);
    $("password").value = "";
    if (me.role !== "ADMIN") return showDenied(me.username);
    keepToken(login.token);
    enter(me);
  } catch (error) {
    showSignIn(error.message);
  } finally {
    submit.disabled = false;
  }
}

function signOut(message) {
  forgetToken();
  showSignIn(message);
}

function enter(me) {
  session.username = me.username;
  $("who").textContent = me.username;
  show("dashboard");
  refresh();
}

// ---------------------------------------------------------------- polling

const poll = { timer: null, generation: 0, withQueued: true, lastOk: null };

function stopPolling() {
  clearTimeout(poll.timer);
  poll.generation += 1; // an answer still on its way is dropped
  forgetData();
}

// Signed out or denied: nothing of what an admin saw stays in the page.
function forgetData() {
  for (const tile of $("tiles").children) tile.querySelector(".tile-value").textContent = "–";
  for (const id of ["users-body", "failed-list"]) $(id).replaceChildren();
  for (const id of ["throughput-summary", "queued-summary"]) $(id).textContent = "–";
  userRows.clear();
  failedRows.clear();
  depthSamples.length = 0;
  throughputChart?.destroy();
  queuedChart?.destroy();
  throughputChart = queuedChart = null;
  poll.lastOk = null;
  setBanner(null);
}

async function refresh() {
  clearTimeout(poll.timer);
  const generation = ++poll.generation;
  const started = performance.now();
  try {
    const data = await gql(dashboardQuery(poll.withQueued));
    if (generation !== poll.generation) return;
    render(data);
    poll.lastOk = new Date();
    setStatus("live", "Live", `updated ${clock.format(poll.lastOk)}`);
    setBanner(null);
  } catch (error) {
    if (generation !== poll.generation) return;
    if (error.code === "UNAUTHENTICATED") return signOut("Your session has ended: sign in again.");
    if (error.code === "FORBIDDEN") return showDenied(session.username);
    if (poll.withQueued && error.code === "GRAPHQL_VALIDATION_FAILED" && /ThroughputPoint/.test(error.message)) {
      poll.withQueued = false; // this server has no queued depth per bucket: sample it here
      $("queued-note").textContent = "depth · sampled since this page opened";
      return refresh();
    }
    setStatus("trouble", "Reconnecting…", "");
    const since = poll.lastOk ? ` Showing the data of ${clock.format(poll.lastOk)}.` : "";
    setBanner(`Cannot refresh: ${error.message}${since}`);
  }
  if (generation === poll.generation) {
    poll.timer = setTimeout(refresh, Math.max(0, POLL_MS - (performance.now() - started)));
  }
}

function setStatus(state, text, time) {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
  $("status-time").textContent = time;
}

function setBanner(message) {
  const banner = $("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

// ---------------------------------------------------------------- rendering

function render(data) {
  renderTiles(data.adminOverview);
  renderCharts(data.adminThroughput, data.adminOverview);
  renderUsers(data.adminUsers.edges.map((edge) => edge.node));
  renderFailed(data.adminJobs.edges.map((edge) => edge.node));
}

function renderTiles(overview) {
  for (const tile of $("tiles").children) {
    const key = tile.dataset.key;
    const value = overview[key];
    tile.querySelector(".tile-value").textContent =
      key === "oldestWaitSeconds" ? duration(value) : integer.format(value);
    tile.classList.toggle("tile-alert", key === "failedLastMinute" && value > 0);
    tile.classList.toggle("tile-warn", key === "oldestWaitSeconds" && value > 60);
  }
}

// uPlot is loaded on its own: without it (npm ci not run) the rest of the page works.
let uPlot = null;
const chartsLoaded = import("./uPlot.esm.js").then(
  (module) => { uPlot = module.default; },
  () => {
    for (const id of ["throughput-chart", "queued-chart"]) {
      $(id).replaceChildren(h("p", { class: "empty",
        text: "Charts are not installed on this server (npm ci --prefix graph/http/admin-assets)." }));
    }
  },
);

const COLORS = { enqueued: "#4c6ef5", completed: "#0ca678", failed: "#e03131", queued: "#f08c00" };
const depthSamples = []; // [seconds, queued] when the server has no ThroughputPoint.queued

class Chart {
  constructor(el, series) {
    this.el = el;
    this.series = series;
    this.plot = null;
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(el);
  }

  destroy() {
    this.observer.disconnect();
    this.plot?.destroy();
    delete this.el.dataset.points;
  }

  size() {
    return { width: Math.max(this.el.clientWidth, 200), height: window.innerWidth < 640 ? 170 : 210 };
  }

  update(data) {
    this.el.dataset.points = data[0].length; // how many points it plots, for a glance in tests
    if (!uPlot) return;
    if (this.plot) return this.plot.setData(data);
    this.plot = new uPlot({ ...this.size(), ...chartOptions(this.series) }, data, this.el);
  }

  resize() {
    if (this.plot && this.el.clientWidth) this.plot.setSize(this.size());
  }
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// The legend shows the point under the cursor, or the newest one.
function legendValue(format) {
  return (u, value, series, index) => {
    const values = u.data[series];
    const v = index == null ? values[values.length - 1] : value;
    return v == null ? "–" : format(v);
  };
}

function chartOptions(series) {
  const axis = {
    stroke: cssVar("--muted"), font: "12px system-ui, sans-serif",
    grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid"), width: 1 },
  };
  return {
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: {
      x: { time: true, range: () => { const now = Date.now() / 1000; return [now - WINDOW_SECONDS, now]; } },
      y: { range: (u, min, max) => [0, max > 0 ? Math.ceil(max * 1.15) : 4] },
    },
    axes: [
      { ...axis },
      { ...axis, size: 48, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6],
        values: (u, ticks) => ticks.map((tick) => integer.format(tick)) },
    ],
    series: [
      { label: "Time", value: legendValue((v) => clock.format(new Date(v * 1000))) },
      ...series.map(([label, color]) => ({
        label, stroke: color, width: 2, fill: `${color}1f`, points: { show: false },
        value: legendValue((v) => integer.format(v)),
      })),
    ],
  };
}

let throughputChart = null;
let queuedChart = null;

function renderCharts(points, overview) {
  const now = Date.now() / 1000;
  const times = points.map((point) => Date.parse(point.at) / 1000);
  const enqueued = points.map((point) => point.enqueued);
  const completed = points.map((point) => point.completed);
  const failed = points.map((point) => point.failed);
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  $("throughput-summary").textContent = `Last 15 min: ${integer.format(sum(enqueued))} enqueued · `
    + `${integer.format(sum(completed))} completed · ${integer.format(sum(failed))} failed`;

  let depth;
  if (points.length && "queued" in points[0]) {
    depth = [times, points.map((point) => point.queued)];
  } else {
    depthSamples.push([now, overview.queued]);
    while (depthSamples.length && depthSamples[0][0] < now - WINDOW_SECONDS) depthSamples.shift();
    depth = [depthSamples.map((s) => s[0]), depthSamples.map((s) => s[1])];
  }
  const peak = Math.max(overview.queued, ...depth[1]);
  $("queued-summary").textContent = `Now ${integer.format(overview.queued)} · peak ${integer.format(peak)} in the last 15 min`;

  if (!uPlot) return;
  throughputChart ??= new Chart($("throughput-chart"),
    [["Enqueued", COLORS.enqueued], ["Completed", COLORS.completed], ["Failed", COLORS.failed]]);
  queuedChart ??= new Chart($("queued-chart"), [["Queued", COLORS.queued]]);
  throughputChart.update([times, enqueued, completed, failed]);
  queuedChart.update(depth);
}

const userRows = new Map();

function renderUsers(users) {
  $("users-empty").hidden = users.length > 0;
  $("users-table").hidden = users.length === 0;
  renderRows($("users-body"), userRows, users, (row) => row.user.username, userRow);
}

function userRow(row) {
  const { user, limits } = row;
  const name = user.username;
  const waiting = row.oldestQueuedAt ? ago(row.oldestQueuedAt) : "–";
  const limitsText = `${limits.concurrency} at once · weight ${limits.weight} · `
    + (limits.startsPerMinute ? `${integer.format(limits.startsPerMinute)}/min` : "no rate limit");
  const node = h("tr", { class: limits.paused ? "is-paused" : null, "data-username": name },
    h("th", { scope: "row", class: "user-cell" },
      h("span", { class: "username", text: name }),
      limits.paused && h("span", { class: "badge badge-paused", text: "paused" })),
    h("td", { class: "num", "data-label": "Queued", text: integer.format(row.queued) }),
    h("td", { class: "num", "data-label": "Running", text: integer.format(row.processing) }),
    h("td", { class: "num", "data-label": "Scheduled", text: integer.format(row.scheduled) }),
    h("td", { class: row.failed ? "num has-failed" : "num", "data-label": "Failed", text: integer.format(row.failed) }),
    h("td", { "data-label": "Waiting since", text: waiting,
      title: row.oldestQueuedAt ? dateTime.format(new Date(row.oldestQueuedAt)) : null }),
    h("td", { class: "limits", "data-label": "Limits", text: limitsText }),
    h("td", { class: "actions" },
      h("button", {
        type: "button", class: limits.paused ? "btn btn-small btn-resume" : "btn btn-small",
        "data-action": limits.paused ? "resume" : "pause",
        "aria-label": `${limits.paused ? "Resume" : "Pause"} ${name}`,
        text: limits.paused ? "Resume" : "Pause",
        onclick: (event) => setPaused(event.currentTarget, name, !limits.paused),
      }),
      h("button", {
        type: "button", class: "btn btn-small", "data-action": "limits",
        "aria-label": `Edit the limits of ${name}`, text: "Limits…",
        onclick: () => openLimits(name, limits),
      }),
      h("button", {
        type: "button", class: "btn btn-small", "data-action": "retry-failed",
        "aria-label": `Retry every failed job of ${name}`, text: "Retry failed…",
        disabled: row.failed === 0, onclick: () => confirmRetryFailed(name, row.failed),
      })));
  return { node, signature: JSON.stringify([row, waiting]) };
}

const failedRows = new Map();

function renderFailed(jobs) {
  $("failed-empty").hidden = jobs.length > 0;
  renderRows($("failed-list"), failedRows, jobs, (job) => job.id, failedRow);
}

function failedRow(job) {
  const owner = job.owner.username;
  const when = job.finishedAt ? ago(job.finishedAt) : "–";
  const node = h("li", { class: "failed-item", "data-job-id": job.id },
    h("div", { class: "failed-head" },
      h("span", { class: "username", text: owner }),
      h("span", { class: "muted", text: `failed ${when}`,
        title: job.finishedAt ? dateTime.format(new Date(job.finishedAt)) : null }),
      h("span", { class: "muted", text: job.attempts === 1 ? "1 attempt" : `${job.attempts} attempts` })),
    h("pre", { class: "error-text", text: job.error || "(no error text)" }),
    h("div", { class: "request" },
      h("span", { class: "field-label", text: "Request" }),
      h("code", { class: "request-data", text: clip(job.requestData, 240),
        title: clip(job.requestData, 2000) })),
    h("div", { class: "failed-foot" },
      h("code", { class: "job-id", text: job.id }),
      h("span", { class: "spacer" }),
      h("button", {
        type: "button", class: "btn btn-small", "data-action": "retry-all",
        "aria-label": `Retry every failed job of ${owner}`, text: "Retry all of this user…",
        onclick: () => confirmRetryFailed(owner, null),
      }),
      h("button", {
        type: "button", class: "btn btn-small btn-primary", "data-action": "retry",
        "aria-label": `Retry job ${job.id}`, text: "Retry",
        onclick: (event) => retryJob(event.currentTarget, job.id),
      })));
  return { node, signature: JSON.stringify([job, when]) };
}

// ---------------------------------------------------------------- actions

// Runs an admin mutation from a control: the control is off meanwhile, the
// outcome is told (in a toast, or by `failed` for a dialog), and the page
// refreshes at once. True when it worked.
async function act(control, work, done, failed = (error) => toast(error.message, "error")) {
  if (control) control.disabled = true;
  try {
    toast(done(await work()));
    return true;
  } catch (error) {
    if (error.code === "UNAUTHENTICATED") signOut("Your session has ended: sign in again.");
    else if (error.code === "FORBIDDEN") showDenied(session.username);
    else failed(error);
    return false;
  } finally {
    if (control) control.disabled = false;
    if (session.token) refresh();
  }
}

function setPaused(button, username, paused) {
  act(button, () => gql(SET_LIMITS, { username, limits: { paused } }),
    () => `${username} ${paused ? "paused: no new job starts" : "resumed"}.`);
}

function retryJob(button, id) {
  act(button, () => gql(RETRY_JOB, { id }), () => "The job is queued again.");
}

let dialogTarget = null;

function openDialog(dialog, username) {
  dialogTarget = username;
  const error = dialog.querySelector(".form-error");
  error.hidden = true;
  error.textContent = "";
  dialog.showModal();
}

function dialogError(dialog, error) {
  const el = dialog.querySelector(".form-error");
  el.textContent = error.message;
  el.hidden = false;
}

function confirmRetryFailed(username, count) {
  const jobs = count == null ? "every failed job" : count === 1 ? "the 1 failed job" : `all ${integer.format(count)} failed jobs`;
  $("confirm-text").textContent =
    `Retry ${jobs} of ${username}? Each goes back to the end of its queue and runs again.`;
  openDialog($("confirm-dialog"), username);
}

async function confirmed() {
  const dialog = $("confirm-dialog");
  const username = dialogTarget;
  const done = await act($("confirm-ok"), () => gql(RETRY_FAILED, { username }),
    (data) => `${integer.format(data.retryFailed)} failed job${data.retryFailed === 1 ? "" : "s"} of ${username} queued again.`,
    (error) => dialogError(dialog, error));
  if (done) dialog.close();
}

function openLimits(username, limits) {
  const dialog = $("limits-dialog");
  $("limits-title").textContent = `Limits of ${username}`;
  $("limit-concurrency").value = limits.concurrency;
  $("limit-weight").value = limits.weight;
  $("limit-starts").value = limits.startsPerMinute;
  openDialog(dialog, username);
}

async function saveLimits(event) {
  event.preventDefault();
  const dialog = $("limits-dialog");
  const username = dialogTarget;
  const limits = {};
  for (const [field, id] of [["concurrency", "limit-concurrency"], ["weight", "limit-weight"],
    ["startsPerMinute", "limit-starts"]]) {
    const input = $(id);
    if (!/^\d+$/.test(input.value.trim())) {
      return dialogError(dialog, new Error(`${input.labels[0].firstChild.textContent.trim()}: a whole number, please.`));
    }
    limits[field] = Number(input.value);
  }
  const done = await act($("limits-save"), () => gql(SET_LIMITS, { username, limits }),
    () => `Limits of ${username} saved.`, (error) => dialogError(dialog, error));
  if (done) dialog.close();
}

// ---------------------------------------------------------------- start

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("denied-back").addEventListener("click", () => showSignIn());
  $("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close());
  $("confirm-ok").addEventListener("click", confirmed);
  $("limits-cancel").addEventListener("click", () => $("limits-dialog").close());
  $("limits-form").addEventListener("submit", saveLimits);
}

async function start() {
  wire();
  await chartsLoaded;
  if (!session.token) return showSignIn();
  try {
    const me = await whoAmI(session.token);
    if (me.role !== "ADMIN") return showDenied(me.username);
    enter(me);
  } catch (error) {
    forgetToken();
    showSignIn(error.code === "UNAUTHENTICATED" ? "Your session has ended: sign in again." : error.message);
  }
}

start();
