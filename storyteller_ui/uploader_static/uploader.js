// Video Storyteller's uploader (an st.components.v2 component on the Batch page).
//
// Each dropped file goes to the server over tus 1.0 (https://tus.io/protocols/resumable-upload): a creation
// POST (Upload-Length, Upload-Metadata filename), then PATCH pieces at Upload-Offset, written straight to disk
// there. A dropped connection is retried with back-off and resumed from the offset the server answers to HEAD;
// the upload's id is kept in localStorage, so the same file dropped again after a reload goes on where it
// stopped. Cancel is a DELETE. A complete upload joins the Batch page's checked list (POST <upload>/list).
// The upload state lives on `window`, not in this call: Streamlit calls this function again on every rerun
// (and when the Batch page is shown again), and uploads keep going in between.

const STATE_KEY = "__videoStorytellerUploader";
const HEADER = "X-Storyteller-Upload";
const TUS = "1.0.0";
const RESUME_KEY = "videoStorytellerTus:"; // + the file's name, size and date: the upload id to resume
const PARALLEL = 2; // files uploading at once
const MAX_FAILURES = 8; // in a row, per file, before it waits for Retry
const RESTARTS = 3; // the server lost a partial file (restart, sweep): start the file again this many times
const PIECE_TIMEOUT_MS = 5 * 60 * 1000;
const CALL_TIMEOUT_MS = 60 * 1000;
const FINISH_TIMEOUT_MS = 10 * 60 * 1000;
const ENDED = new Set(["added", "refused", "failed", "cancelled", "skipped"]);
const ACTIVE = new Set(["uploading", "retrying", "checking"]);

class Transient extends Error {}

function globalState() {
  if (!window[STATE_KEY]) {
    window[STATE_KEY] = { items: [], seq: 0, running: 0, config: null, notify: null, host: null,
                          unnotified: 0, notified: 0, notifyTimer: null, guard: null };
  }
  return window[STATE_KEY];
}

export default function uploader(component) {
  const { parentElement, data, setTriggerValue } = component;
  const S = globalState();
  S.config = { endpoint: "/upload/tus", pieceBytes: 8 * 1024 * 1024, maxBytes: 2 * 1024 ** 3, extensions: [], ...(data || {}) };
  const notify = (value) => setTriggerValue("uploaded", value);
  S.notify = notify;
  S.host = mount(parentElement, S);
  render(S);
  if (S.unnotified > 0) scheduleNotify(S, 50); // files finished while the page was elsewhere
  return () => {
    if (S.notify === notify) {
      S.notify = null;
      S.host = null;
    }
  };
}

// -- the DOM ------------------------------------------------------------------------------------------
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function mount(parent, S) {
  const existing = parent.querySelector(".stu-root");
  if (existing && existing.__stu) return existing.__stu;
  const root = el("div", "stu-root");
  root.dataset.testid = "storyteller-uploader";
  const zone = el("label", "stu-zone");
  zone.dataset.testid = "storyteller-uploader-zone";
  const input = el("input", "stu-input");
  input.type = "file";
  input.multiple = true;
  input.dataset.testid = "storyteller-uploader-input";
  input.setAttribute("aria-label", "Choose video files to upload");
  const icon = el("span", "stu-icon", "\u2B06");
  icon.setAttribute("aria-hidden", "true");
  const words = el("span", "stu-words");
  words.append(el("strong", "", "Drag and drop videos here"), el("span", "", " or "), el("span", "stu-browse", "browse files"));
  const hint = el("span", "stu-hint");
  zone.append(input, icon, words, hint);
  const summary = el("div", "stu-summary");
  const clear = el("button", "stu-clear", "Clear finished");
  clear.type = "button";
  const head = el("div", "stu-head");
  head.append(summary, clear);
  const list = el("div", "stu-list");
  list.setAttribute("role", "list");
  root.append(zone, head, list);
  parent.appendChild(root);

  input.addEventListener("change", () => {
    add(S, Array.from(input.files || []));
    input.value = ""; // the same file can be picked again
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("stu-over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("stu-over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("stu-over");
    add(S, Array.from(event.dataTransfer.files || []));
  });
  clear.addEventListener("click", () => {
    S.items = S.items.filter((item) => !ENDED.has(item.state) || item.state === "failed");
    render(S);
  });
  list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-act]");
    if (!button) return;
    const item = S.items.find((i) => String(i.key) === button.dataset.key);
    if (!item) return;
    if (button.dataset.act === "cancel") cancel(S, item);
    else if (button.dataset.act === "retry") retry(S, item);
  });
  const host = { root, list, summary, clear, hint, rows: new Map() };
  root.__stu = host;
  return host;
}

function mb(bytes) {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(bytes / 1024))} KB`;
}

function statusText(item) {
  const pct = item.size ? Math.floor((100 * item.received) / item.size) : 100;
  switch (item.state) {
    case "queued": return "Waiting";
    case "uploading": return `Uploading ${pct}% (${mb(item.received)} of ${mb(item.size)})`;
    case "retrying": return `Connection lost at ${pct}%; resuming in ${Math.max(1, Math.ceil((item.retryAt - Date.now()) / 1000))} s`;
    case "checking": return "Checking the video...";
    case "added": return "Added to the list below";
    default: return item.message || item.state;
  }
}

let frame = 0;
function render(S) {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    draw(S);
  });
}

function draw(S) {
  const host = S.host;
  if (!host) return;
  const cfg = S.config;
  host.hint.textContent = `Up to ${mb(cfg.maxBytes)} per file; saved on this machine as it arrives.`;
  const seen = new Set();
  for (const item of S.items) {
    seen.add(item.key);
    let row = host.rows.get(item.key);
    if (!row) {
      row = { node: el("div", "stu-row"), name: el("span", "stu-name"), size: el("span", "stu-size"),
              status: el("span", "stu-status"), act: el("button", "stu-act"), bar: el("div", "stu-bar"), fill: el("div", "stu-fill") };
      row.node.setAttribute("role", "listitem");
      row.act.type = "button";
      row.bar.append(row.fill);
      const line = el("div", "stu-line");
      line.append(row.name, row.size, row.status, row.act);
      row.node.append(line, row.bar);
      host.rows.set(item.key, row);
    }
    host.list.appendChild(row.node); // keeps the order of S.items
    row.node.dataset.state = item.state;
    row.node.dataset.name = item.name;
    row.name.textContent = item.name;
    row.name.title = item.name;
    row.size.textContent = mb(item.size);
    row.status.textContent = statusText(item);
    row.status.title = row.status.textContent;
    const pct = item.size ? (100 * item.received) / item.size : 100;
    row.fill.style.width = `${item.state === "skipped" ? 0 : Math.min(100, pct)}%`;
    const act = ENDED.has(item.state) ? (item.state === "failed" || item.state === "cancelled" ? "retry" : "") : "cancel";
    row.act.hidden = !act || (act === "retry" && !item.file);
    row.act.dataset.act = act;
    row.act.dataset.key = String(item.key);
    row.act.textContent = act === "retry" ? "Retry" : "\u2715";
    row.act.title = act === "retry" ? "Try this file again" : "Cancel this upload";
    row.act.setAttribute("aria-label", `${row.act.title}: ${item.name}`);
  }
  for (const [key, row] of host.rows) {
    if (!seen.has(key)) {
      row.node.remove();
      host.rows.delete(key);
    }
  }
  const total = S.items.length;
  const done = S.items.filter((i) => i.state === "added").length;
  const busy = S.items.filter((i) => ACTIVE.has(i.state) || i.state === "queued").length;
  const bad = S.items.filter((i) => ["refused", "failed", "skipped"].includes(i.state)).length;
  host.summary.textContent = total === 0 ? "" :
    `${done} of ${total} file(s) added` + (busy ? `, ${busy} in progress` : "") + (bad ? `, ${bad} not added` : "");
  host.clear.hidden = !S.items.some((i) => ENDED.has(i.state) && i.state !== "failed");
  if (S.items.some((i) => i.state === "retrying")) setTimeout(() => render(S), 500); // count the wait down
}

// -- the queue ----------------------------------------------------------------------------------------
function extension(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot).toLowerCase() : "";
}

function add(S, files) {
  const cfg = S.config;
  for (const file of files) {
    const item = { key: ++S.seq, file, name: file.name, size: file.size, received: 0, id: null, state: "queued",
                   message: "", failures: 0, restarts: 0, cancelled: false, ctrl: null };
    const ext = extension(file.name);
    if (cfg.extensions.length && !cfg.extensions.includes(ext)) {
      item.state = "skipped";
      item.message = `Skipped: ${ext || "no extension"} is not a video file extension`;
      item.file = null;
    } else if (file.size > cfg.maxBytes) {
      item.state = "skipped";
      item.message = `Skipped: ${mb(file.size)} is over the ${mb(cfg.maxBytes)} limit per file. Split or compress it.`;
      item.file = null;
    }
    S.items.push(item);
  }
  render(S);
  pump(S);
}

function pump(S) {
  while (S.running < PARALLEL) {
    const item = S.items.find((i) => i.state === "queued");
    if (!item) break;
    S.running += 1;
    item.state = "uploading";
    upload(S, item)
      .catch((error) => fail(item, `Upload failed: ${error && error.message ? error.message : error}`))
      .finally(() => {
        S.running -= 1;
        item.ctrl = null;
        render(S);
        pump(S);
      });
  }
  guardUnload(S);
  render(S);
}

function cancel(S, item) {
  item.cancelled = true;
  if (item.ctrl) item.ctrl.abort();
  if (item.id) call(S, item, "DELETE", `/${item.id}`).catch(() => {});
  forget(item);
  item.id = null;
  item.received = 0;
  item.state = "cancelled";
  item.message = "Cancelled";
  render(S);
  guardUnload(S);
}

function retry(S, item) {
  if (!item.file) return;
  item.cancelled = false;
  item.failures = 0;
  item.restarts = 0;
  item.message = "";
  item.state = "queued";
  pump(S);
}

function fail(item, message, state = "failed") {
  if (item.cancelled) return;
  item.state = state; // "refused": the server said no for good (too large, empty...); "failed": Retry may help
  item.message = message;
}

const refusal = (r) => (r.status === 400 || r.status === 413 ? "refused" : "failed");

function guardUnload(S) {
  const busy = S.items.some((i) => ACTIVE.has(i.state) || i.state === "queued");
  if (busy && !S.guard) {
    S.guard = (event) => {
      event.preventDefault();
      event.returnValue = "";
    };
    window.addEventListener("beforeunload", S.guard);
  } else if (!busy && S.guard) {
    window.removeEventListener("beforeunload", S.guard);
    S.guard = null;
  }
}

function scheduleNotify(S, delay) {
  clearTimeout(S.notifyTimer);
  S.notifyTimer = setTimeout(() => {
    if (!S.notify || S.unnotified === 0) return; // not on the Batch page: told when it mounts again
    S.unnotified = 0;
    S.notified += 1;
    S.notify({ count: S.notified, at: Date.now() }); // a rerun: the page reads the checked list again
  }, delay);
}

// -- the protocol (tus 1.0) ---------------------------------------------------------------------------
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function call(S, item, method, path, { body, headers = {}, timeoutMs = CALL_TIMEOUT_MS } = {}) {
  const ctrl = new AbortController();
  item.ctrl = ctrl;
  const timer = setTimeout(() => ctrl.abort(new Transient("no answer in time")), timeoutMs);
  try {
    const response = await fetch(S.config.endpoint + path, {
      method, body, headers: { [HEADER]: "1", "Tus-Resumable": TUS, ...headers }, credentials: "same-origin",
      cache: "no-store", signal: ctrl.signal,
    });
    let answer = {};
    const text = method === "HEAD" ? "" : await response.text();
    try {
      answer = text ? JSON.parse(text) : {};
    } catch (_) {
      answer = {};
    }
    // our errors: {"error": {"code", "message"}}; anything else (a proxy's page): the status line
    const error = answer && answer.error;
    const message = typeof error === "string" ? error : error && error.message ? error.message :
      response.ok ? "" : `the server answered ${response.status} ${response.statusText}`;
    const offset = response.headers.get("Upload-Offset");
    return { status: response.status, ok: response.ok, body: answer, message, headers: response.headers,
             offset: offset !== null && /^\d+$/.test(offset) ? Number(offset) : null };
  } catch (error) {
    throw new Transient(error && error.message ? error.message : String(error)); // network error, abort, timeout
  } finally {
    clearTimeout(timer);
  }
}

const transient = (status) => status === 408 || status === 423 || status === 429 || status >= 500 && status !== 507;

function restart(item, why) {
  item.restarts += 1;
  forget(item);
  item.id = null;
  item.received = 0;
  if (item.restarts > RESTARTS) throw new Error(why);
}

// -- resuming after a reload: the upload id of a file (name, size, date), kept until the file is listed ---
function resumeKey(item) {
  return RESUME_KEY + JSON.stringify([item.name, item.size, item.file ? item.file.lastModified : 0]);
}

function remembered(item) {
  try {
    const id = window.localStorage.getItem(resumeKey(item));
    return id && /^[0-9a-f]{32}$/.test(id) ? id : null;
  } catch (_) {
    return null; // storage off (private mode, a policy): resume within this page only
  }
}

function remember(item) {
  try {
    window.localStorage.setItem(resumeKey(item), item.id);
  } catch (_) { /* as above */ }
}

function forget(item) {
  try {
    window.localStorage.removeItem(resumeKey(item));
  } catch (_) { /* as above */ }
}

function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

// HEAD: where the server is. true when the upload is known (item.received set from Upload-Offset).
async function locate(S, item) {
  const r = await call(S, item, "HEAD", `/${item.id}`);
  if (r.ok && r.offset !== null) {
    item.received = r.offset;
    return true;
  }
  if (r.status === 404 || r.status === 410) return false;
  if (transient(r.status)) throw new Transient(r.message);
  throw new Error(r.message || `Refused (${r.status})`);
}

async function upload(S, item) {
  for (;;) {
    if (item.cancelled) return;
    try {
      if (!item.id && item.restarts === 0) {
        const earlier = remembered(item); // dropped here before a reload: go on where the server is
        if (earlier) {
          item.id = earlier;
          if (!(await locate(S, item))) {
            forget(item);
            item.id = null;
          }
        }
      }
      if (!item.id) {
        const r = await call(S, item, "POST", "", {
          headers: { "Upload-Length": String(item.size), "Upload-Metadata": `filename ${base64(item.name)}` },
        });
        if (r.status !== 201) {
          if (transient(r.status)) throw new Transient(r.message);
          return fail(item, r.message || `Refused (${r.status})`, refusal(r));
        }
        const location = r.headers.get("Location") || "";
        item.id = location.replace(/\/+$/, "").split("/").pop(); // the id: this page's own path, behind a proxy too
        item.received = r.offset || 0;
        remember(item);
      }
      while (item.received < item.size) {
        if (item.cancelled) return;
        const start = item.received;
        const end = Math.min(item.size, start + S.config.pieceBytes);
        const r = await call(S, item, "PATCH", `/${item.id}`, {
          body: item.file.slice(start, end), timeoutMs: PIECE_TIMEOUT_MS,
          headers: { "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(start) },
        });
        if (r.ok && r.offset !== null) {
          item.received = r.offset;
          item.failures = 0;
          item.state = "uploading";
          render(S);
        } else if (r.status === 409) {
          if (!(await locate(S, item))) restart(item, r.message); // another offset: resume where the server is
        } else if (r.status === 404 || r.status === 410) {
          restart(item, r.message);
        } else if (transient(r.status) || r.status === 460) {
          throw new Transient(r.message);
        } else {
          return fail(item, r.message || `Refused (${r.status})`, refusal(r));
        }
      }
      if (item.cancelled) return;
      item.state = "checking";
      render(S);
      const r = await call(S, item, "POST", `/${item.id}/list`, { timeoutMs: FINISH_TIMEOUT_MS });
      if (r.status === 409 && r.body.error && r.body.error.code === "incomplete") {
        if (!(await locate(S, item))) restart(item, r.message);
        continue;
      }
      if (r.status === 404 || r.status === 410) {
        restart(item, r.message);
        continue;
      }
      if (!r.ok) {
        if (transient(r.status) || r.status === 409) throw new Transient(r.message);
        return fail(item, r.message || `Refused (${r.status})`, refusal(r));
      }
      forget(item);
      item.state = r.body.ok ? "added" : "refused";
      item.message = r.body.ok ? "" : r.body.error;
      item.sha256 = r.body.sha256;
      item.file = null; // nothing more to send: let the browser drop it
      S.unnotified += 1;
      scheduleNotify(S, S.items.some((i) => i.state === "queued" || i.state === "uploading") ? 600 : 100);
      return;
    } catch (error) {
      if (item.cancelled) return;
      if (!(error instanceof Transient)) throw error;
      item.failures += 1;
      if (item.failures > MAX_FAILURES) {
        return fail(item, `The connection kept failing (${error.message}). Press Retry to resume where it stopped.`);
      }
      const wait = Math.min(15000, 1000 * 2 ** (item.failures - 1));
      item.state = "retrying";
      item.retryAt = Date.now() + wait;
      render(S);
      await sleep(wait);
      if (item.cancelled) return;
      item.state = "uploading";
      if (item.id) {
        try {
          if (!(await locate(S, item))) restart(item, "The server no longer has this upload.");
        } catch (statusError) {
          if (!(statusError instanceof Transient)) throw statusError;
        }
      }
    }
  }
}
