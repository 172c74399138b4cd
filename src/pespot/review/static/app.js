// pespot review: the page. Plain JavaScript, no build step, no outside assets.
//
// Frame exactness: the server gives each video as a constant-rate file where frame i is shown from i / rate to
// (i + 1) / rate. The page seeks to the middle of a frame, (i + 0.5) / rate, so rounding never lands on a
// neighbour; while playing it reads the frame on screen from requestVideoFrameCallback's mediaTime; on pause it
// seeks back to the middle of the frame shown.
//
// Labels and predictions are kept apart: a prediction becomes a label only when accepted (or moved or relabelled,
// which accept it). Every edit is an operation with its before and after, so undo and redo are exact. Save sends
// every label with the version the page started from; when another page saved first, the server refuses, and this
// page merges its own changes (what differs from the labels it last loaded or saved) onto the new labels.
"use strict";

const TOKEN = window.PESPOT_TOKEN;
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#7f7f7f", "#bcbd22"];
const SPEEDS = [0.1, 0.25, 0.5, 1, 2, 4];
const GUTTER = 96; // px left of the timeline lanes, for the class names
const AXIS = 18; // px of the time axis above the lanes

const $ = (id) => document.getElementById(id);
const video = $("video");
const canvas = $("timeline");

const S = {
  classes: [], version: 0, videos: [], current: 0, threshold: 0.5, classIdx: 0,
  labels: [], preds: [], scores: [], // per video: Map uid -> label; Map uid -> prediction; Uint8Array | null
  base: null, // what the page last loaded or saved: {labels, status} per video, for merges and "unsaved"
  frame: 0, presented: -1, watching: false, playing: false, rate: 25, ready: false, selected: null, sort: { key: "frame", dir: 1 },
  history: [], future: [], view: { start: 0, end: 1 }, tab: Math.random().toString(36).slice(2, 8), made: 0,
};

// ------------------------------------------------------------------------------------------------ server calls

async function api(path, options = {}) {
  const headers = Object.assign({ "X-Pespot-Token": TOKEN }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  return { ok: response.ok, status: response.status, body };
}

function message(text, error = false) {
  const el = $("message");
  el.textContent = text;
  el.className = error ? "error" : "";
}

async function loadState() {
  const { ok, body } = await api("/api/state");
  if (!ok) { message(body && body.error || "cannot load the labels", true); return null; }
  return body;
}

function adopt(state) {
  S.classes = state.classes;
  S.version = state.version;
  S.videos = state.videos;
  S.labels = state.videos.map((v) => new Map(v.labels.map((l) => [l.uid, { uid: l.uid, frame: l.frame, label: l.label }])));
  S.preds = state.videos.map((v) => new Map(v.predictions.map((p) => [p.uid, Object.assign({}, p)])));
  S.base = snapshot();
}

function snapshot() {
  return S.videos.map((v, i) => ({
    labels: new Map([...S.labels[i]].map(([uid, l]) => [uid, JSON.stringify([l.frame, l.label])])),
    status: new Map([...S.preds[i]].map(([uid, p]) => [uid, p.status])),
  }));
}

function unsavedCount() {
  let n = 0;
  S.videos.forEach((v, i) => {
    const base = S.base[i];
    const now = S.labels[i];
    for (const [uid, l] of now) if (base.labels.get(uid) !== JSON.stringify([l.frame, l.label])) n++;
    for (const uid of base.labels.keys()) if (!now.has(uid)) n++;
    for (const [uid, p] of S.preds[i]) if (base.status.get(uid) !== p.status) n++;
  });
  return n;
}

function payload() {
  return {
    version: S.version,
    videos: S.videos.map((v, i) => ({
      video: v.video,
      labels: [...S.labels[i].values()].map((l) => ({ uid: l.uid, frame: l.frame, label: l.label })),
      reviewed: {
        accepted: [...S.preds[i].values()].filter((p) => p.status === "accepted").map((p) => p.uid),
        rejected: [...S.preds[i].values()].filter((p) => p.status === "rejected").map((p) => p.uid),
      },
    })),
  };
}

async function save() {
  message("saving…");
  const { ok, status, body } = await api("/api/save", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload()),
  });
  if (ok) {
    S.version = body.version;
    S.base = snapshot();
    message(`saved (version ${body.version}): ${body.written.join(", ")}`);
  } else if (status === 409 && body && body.version !== S.version) {
    await mergeOnto(body.version);
  } else {
    message(body && body.error || `save failed (HTTP ${status})`, true);
  }
  render();
}

// Another page saved first: take its labels and put this page's own changes (what differs from what this page
// last loaded or saved) on top of them. Nothing of either page is lost; the person checks and saves again.
async function mergeOnto(newVersion) {
  const mine = { labels: S.labels.map((m) => new Map(m)), preds: S.preds.map((m) => new Map(m)), base: S.base };
  const state = await loadState();
  if (!state) return;
  adopt(state);
  let changes = 0;
  S.videos.forEach((v, i) => {
    const base = mine.base[i];
    const uids = new Set([...base.labels.keys(), ...mine.labels[i].keys()]);
    for (const uid of uids) {
      const l = mine.labels[i].get(uid);
      const now = l ? JSON.stringify([l.frame, l.label]) : undefined;
      if (now === base.labels.get(uid)) continue;
      changes++;
      if (l) S.labels[i].set(uid, Object.assign({}, l)); else S.labels[i].delete(uid);
    }
    for (const [uid, p] of mine.preds[i]) {
      if (p.status !== base.status.get(uid) && S.preds[i].has(uid)) {
        S.preds[i].get(uid).status = p.status;
        changes++;
      }
    }
  });
  S.history = [];
  S.future = [];
  message(`Another page saved first (version ${newVersion}). Your ${changes} unsaved changes were merged onto `
    + "its labels: check them and save again.", true);
}

// ------------------------------------------------------------------------------------------------ frames

function vid() { return S.videos[S.current]; }

function frameTime(f) { return (f + 0.5) / S.rate; }

function clampFrame(f) { return Math.max(0, Math.min(vid().num_frames - 1, Math.round(f))); }

function settle(value) { document.body.dataset.settled = value ? "1" : "0"; }

function seek(f) {
  if (!S.ready) return;
  f = clampFrame(f);
  if (S.playing) { S.playing = false; video.pause(); } // (the pause handler then has nothing to snap)
  S.frame = f;
  settle(false);
  if (S.presented !== f) watchPresented();
  const target = frameTime(f);
  if (Math.abs(video.currentTime - target) > 1e-6) video.currentTime = target;
  else requestAnimationFrame(checkSettled);
  follow();
  render();
}

// The frame on screen comes from requestVideoFrameCallback (S.presented; -1 unknown). A seek is settled once the
// frame it asked for is the one presented (tests wait for data-settled="1" before looking at the picture). One
// callback chain at a time; it re-arms itself until the frame wanted is on screen.
function watchPresented() {
  if (S.watching || !video.requestVideoFrameCallback) return;
  S.watching = true;
  video.requestVideoFrameCallback((now, meta) => {
    S.watching = false;
    S.presented = Math.floor(meta.mediaTime * S.rate + 1e-6);
    if (!S.playing && S.presented !== S.frame) watchPresented();
    checkSettled();
  });
}

function checkSettled() {
  const presented = video.requestVideoFrameCallback ? S.presented === S.frame : true;
  if (!S.playing && !video.seeking && presented) settle(true);
}

video.addEventListener("seeked", checkSettled);

function onFrame(now, meta) {
  if (!S.playing) return;
  S.frame = S.presented = clampFrame(Math.floor(meta.mediaTime * S.rate + 1e-6));
  follow();
  render();
  video.requestVideoFrameCallback(onFrame);
}

function play() {
  if (!S.ready) return;
  if (S.playing) { video.pause(); return; }
  S.playing = true;
  settle(false);
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
  video.play();
  render();
}

video.addEventListener("pause", () => {
  if (!S.playing) return;
  S.playing = false;
  if (!video.requestVideoFrameCallback) S.frame = clampFrame(Math.floor(video.currentTime * S.rate));
  seek(S.frame); // back to the middle of the frame on screen
});

video.addEventListener("ended", () => { S.playing = false; seek(vid().num_frames - 1); });

function formatTime(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds - 60 * m;
  return `${m}:${s.toFixed(3).padStart(6, "0")}`;
}

async function openVideo(index) {
  S.current = index;
  S.ready = false;
  S.selected = null;
  S.watching = false; // a callback armed on the previous video may never come
  settle(false);
  $("overlay").classList.remove("hidden");
  $("overlay").textContent = "preparing the video…";
  const v = vid();
  S.view = { start: 0, end: v.num_frames };
  const poll = setInterval(async () => {
    const { ok, body } = await api(`/api/progress/${index}`);
    if (ok && body.total) {
      $("overlay").textContent = `transcoding once to a frame-exact mp4: ${body.done} / ${body.total} frames`;
    }
  }, 500);
  const { ok, body } = await api(`/api/media/${index}`);
  clearInterval(poll);
  if (!ok) { $("overlay").textContent = body && body.error || "this video cannot be shown"; return; }
  if (S.scores[index] === undefined) {
    S.scores[index] = null;
    if (v.scores) {
      const response = await fetch(`/api/scores/${index}`, { headers: { "X-Pespot-Token": TOKEN } });
      if (response.ok) S.scores[index] = new Uint8Array(await response.arrayBuffer());
    }
  }
  S.rate = body.rate[0] / body.rate[1];
  $("media-info").textContent = `${v.num_frames} frames at ${v.fps.toFixed(3).replace(/\.?0+$/, "")} fps`
    + (body.transcoded ? " (shown from a frame-exact transcode)" : "");
  video.src = body.url;
  await new Promise((resolve) => video.addEventListener("loadeddata", resolve, { once: true }));
  S.presented = 0; // a freshly loaded video shows its first frame
  $("overlay").classList.add("hidden");
  S.ready = true;
  $("frame-input").max = v.num_frames - 1;
  $("frame-count").textContent = `/ ${v.num_frames - 1}`;
  seek(0);
}

// ------------------------------------------------------------------------------------------------ edits

function pred(uid) { return S.preds[S.current].get(uid); }
function label(uid) { return S.labels[S.current].get(uid); }

function selected() {
  if (!S.selected) return null;
  const item = S.selected.kind === "label" ? label(S.selected.uid) : pred(S.selected.uid);
  return item ? Object.assign({ kind: S.selected.kind }, item) : null;
}

// An operation: changes [{kind: 'label'|'pred', uid, before, after}] on one video, and what to select after.
function apply(op, forward) {
  const labels = S.labels[op.video];
  const preds = S.preds[op.video];
  for (const c of op.changes) {
    const value = forward ? c.after : c.before;
    if (c.kind === "label") {
      if (value === null) labels.delete(c.uid); else labels.set(c.uid, Object.assign({}, value));
    } else {
      preds.get(c.uid).status = value;
    }
  }
  const select = forward ? op.selectAfter : op.selectBefore;
  if (op.video === S.current) {
    S.selected = select;
    const item = selected();
    if (item) seek(item.frame);
  }
}

function perform(changes, selectAfter) {
  const op = { video: S.current, changes, selectBefore: S.selected, selectAfter };
  apply(op, true);
  S.history.push(op);
  S.future = [];
  render();
}

function undo() {
  const op = S.history.pop();
  if (!op) { message("nothing to undo"); return; }
  if (op.video !== S.current) { $("video-select").value = op.video; openVideo(op.video); }
  apply(op, false);
  S.future.push(op);
  message("undone");
  render();
}

function redo() {
  const op = S.future.pop();
  if (!op) { message("nothing to redo"); return; }
  apply(op, true);
  S.history.push(op);
  message("redone");
  render();
}

function newUid() { S.made += 1; return `n${S.tab}-${S.made}`; }

function hasLabel(frame, name, except) {
  for (const l of S.labels[S.current].values()) if (l.frame === frame && l.label === name && l.uid !== except) return true;
  return false;
}

// A prediction accepted as a label at ``frame`` with class ``name`` (its own by default).
function acceptAs(p, frame, name) {
  if (hasLabel(frame, name)) { message(`there is already a ${name} label at frame ${frame}`, true); return; }
  const uid = newUid();
  perform([{ kind: "pred", uid: p.uid, before: p.status, after: "accepted" },
    { kind: "label", uid, before: null, after: { uid, frame, label: name } }], { kind: "label", uid });
  message(`accepted: ${name} at frame ${frame}`);
}

function accept() {
  const s = selected();
  if (!s || s.kind !== "pred") { message("select a prediction to accept", true); return; }
  acceptAs(s, s.frame, s.label);
}

function reject() {
  const s = selected();
  if (!s || s.kind !== "pred") { message("select a prediction to reject", true); return; }
  perform([{ kind: "pred", uid: s.uid, before: s.status, after: "rejected" }], null);
  message(`rejected: ${s.label} at frame ${s.frame}`);
}

function move(delta) {
  const s = selected();
  if (!s) { message("select an event to move", true); return; }
  const frame = clampFrame(s.frame + delta);
  if (frame === s.frame) return;
  if (s.kind === "pred") { acceptAs(s, frame, s.label); return; }
  if (hasLabel(frame, s.label, s.uid)) { message(`there is already a ${s.label} label at frame ${frame}`, true); return; }
  perform([{ kind: "label", uid: s.uid, before: label(s.uid), after: { uid: s.uid, frame, label: s.label } }],
    { kind: "label", uid: s.uid });
  message(`moved: ${s.label} to frame ${frame}`);
}

function relabel(index) {
  const s = selected();
  const name = S.classes[index];
  if (!s || s.label === name) return;
  if (s.kind === "pred") { acceptAs(s, s.frame, name); return; }
  if (hasLabel(s.frame, name, s.uid)) { message(`there is already a ${name} label at frame ${s.frame}`, true); return; }
  perform([{ kind: "label", uid: s.uid, before: label(s.uid), after: { uid: s.uid, frame: s.frame, label: name } }],
    { kind: "label", uid: s.uid });
  message(`relabelled: ${s.label} → ${name} at frame ${s.frame}`);
}

function add() {
  if (!S.ready) return;
  const name = S.classes[S.classIdx];
  if (hasLabel(S.frame, name)) { message(`there is already a ${name} label at frame ${S.frame}`, true); return; }
  const uid = newUid();
  perform([{ kind: "label", uid, before: null, after: { uid, frame: S.frame, label: name } }], { kind: "label", uid });
  message(`added: ${name} at frame ${S.frame}`);
}

function remove() {
  const s = selected();
  if (!s) { message("select an event to delete", true); return; }
  if (s.kind === "pred") { reject(); return; }
  perform([{ kind: "label", uid: s.uid, before: label(s.uid), after: null }], null);
  message(`deleted: ${s.label} at frame ${s.frame}`);
}

function select(kind, uid) {
  S.selected = { kind, uid };
  const item = selected();
  if (item) seek(item.frame);
  render();
}

// ------------------------------------------------------------------------------------------------ the list

function rows() {
  const out = [];
  for (const l of S.labels[S.current].values()) out.push({ kind: "label", uid: l.uid, frame: l.frame, label: l.label, score: null });
  for (const p of S.preds[S.current].values()) {
    if (p.status === "open" && p.score >= S.threshold) out.push({ kind: "pred", uid: p.uid, frame: p.frame, label: p.label, score: p.score });
  }
  const { key, dir } = S.sort;
  const value = (r) => (key === "label" ? S.classes.indexOf(r.label) : key === "score" ? (r.score === null ? 2 : r.score)
    : key === "kind" ? (r.kind === "label" ? 0 : 1) : r.frame);
  out.sort((a, b) => (value(a) - value(b)) * dir || a.frame - b.frame || S.classes.indexOf(a.label) - S.classes.indexOf(b.label));
  return out;
}

function renderList() {
  const body = $("events").tBodies[0];
  const list = rows();
  $("event-count").textContent = `${list.filter((r) => r.kind === "label").length} labels, `
    + `${list.filter((r) => r.kind === "pred").length} predictions to review`;
  body.replaceChildren(...list.map((r) => {
    const tr = document.createElement("tr");
    tr.className = r.kind + (S.selected && S.selected.uid === r.uid ? " selected" : "");
    tr.dataset.uid = r.uid;
    tr.dataset.kind = r.kind;
    tr.dataset.frame = r.frame;
    tr.dataset.label = r.label;
    const cells = [r.kind === "label" ? "label" : "prediction", r.label, r.frame, formatTime(r.frame / vid().fps),
      r.score === null ? "" : r.score.toFixed(3)];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    tr.addEventListener("click", () => select(r.kind, r.uid));
    return tr;
  }));
  const chosen = body.querySelector("tr.selected");
  if (chosen) chosen.scrollIntoView({ block: "nearest" });
  document.querySelectorAll("#events th").forEach((th) => {
    th.className = th.dataset.sort === S.sort.key && th.textContent !== "time" ? `sorted${S.sort.dir < 0 ? " desc" : ""}` : "";
  });
}

function step(direction) {
  const list = rows().sort((a, b) => a.frame - b.frame);
  const after = direction > 0 ? list.find((r) => r.frame > S.frame) : list.reverse().find((r) => r.frame < S.frame);
  if (after) select(after.kind, after.uid);
}

// ------------------------------------------------------------------------------------------------ the timeline

function follow() {
  const { start, end } = S.view;
  if (S.frame >= start && S.frame < end) return;
  const width = end - start;
  S.view.start = Math.max(0, Math.min(vid().num_frames - width, S.frame - Math.floor(width / 2)));
  S.view.end = S.view.start + width;
}

function zoom(factor, centre) {
  const n = vid().num_frames;
  const width = Math.max(10, Math.min(n, Math.round((S.view.end - S.view.start) * factor)));
  const at = centre === undefined ? S.frame : centre;
  const share = (at - S.view.start) / (S.view.end - S.view.start);
  S.view.start = Math.max(0, Math.min(n - width, Math.round(at - share * width)));
  S.view.end = S.view.start + width;
  render();
}

function geometry() {
  const laneHeight = Math.max(16, Math.min(32, Math.floor((canvas.clientHeight - AXIS) / Math.max(1, S.classes.length))));
  const width = canvas.clientWidth - GUTTER;
  const x = (f) => GUTTER + ((f + 0.5 - S.view.start) / (S.view.end - S.view.start)) * width;
  const frameAt = (px) => S.view.start + ((px - GUTTER) / width) * (S.view.end - S.view.start) - 0.5;
  return { laneHeight, width, x, frameAt };
}

function drawTimeline() {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * ratio;
  canvas.height = canvas.clientHeight * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  if (!S.videos.length) return;
  const { laneHeight, width, x } = geometry();
  const K = S.classes.length;
  const scores = S.scores[S.current];
  const v = vid();
  // axis: a tick every "nice" number of frames
  const span = S.view.end - S.view.start;
  const tickFrames = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000].find((t) => span / t <= width / 70) || 50000;
  ctx.fillStyle = "#556";
  ctx.font = "11px system-ui, sans-serif";
  for (let f = Math.ceil(S.view.start / tickFrames) * tickFrames; f < S.view.end; f += tickFrames) {
    ctx.fillRect(x(f), AXIS - 5, 1, 5);
    ctx.fillText(String(f), x(f) + 2, AXIS - 6);
  }
  S.classes.forEach((name, k) => {
    const top = AXIS + k * laneHeight;
    ctx.fillStyle = k % 2 ? "#f7f8fb" : "#fff";
    ctx.fillRect(GUTTER, top, width, laneHeight);
    ctx.fillStyle = COLOURS[k % COLOURS.length];
    ctx.fillText(name.slice(0, 14), 4, top + laneHeight / 2 + 4);
    if (scores) { // the class's per-frame score: the highest in each pixel column
      ctx.beginPath();
      ctx.moveTo(GUTTER, top + laneHeight);
      for (let px = 0; px < width; px++) {
        const f0 = Math.max(0, Math.floor(S.view.start + (px / width) * span));
        const f1 = Math.min(v.num_frames, Math.max(f0 + 1, Math.floor(S.view.start + ((px + 1) / width) * span)));
        let best = 0;
        for (let f = f0; f < f1; f++) best = Math.max(best, scores[f * K + k]);
        ctx.lineTo(GUTTER + px, top + laneHeight - (best / 255) * (laneHeight - 2));
      }
      ctx.lineTo(GUTTER + width, top + laneHeight);
      ctx.globalAlpha = 0.25;
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.setLineDash([3, 3]);
      ctx.strokeStyle = "#aab";
      const y = top + laneHeight - S.threshold * (laneHeight - 2);
      ctx.beginPath(); ctx.moveTo(GUTTER, y); ctx.lineTo(GUTTER + width, y); ctx.stroke();
      ctx.setLineDash([]);
    }
  });
  const inView = (f) => f >= S.view.start && f < S.view.end;
  for (const p of S.preds[S.current].values()) {
    if (p.status !== "open" || p.score < S.threshold || !inView(p.frame)) continue;
    const k = S.classes.indexOf(p.label);
    const top = AXIS + k * laneHeight;
    const chosen = S.selected && S.selected.uid === p.uid;
    ctx.globalAlpha = 0.35 + 0.65 * p.score;
    ctx.strokeStyle = chosen ? "#000" : COLOURS[k % COLOURS.length];
    ctx.lineWidth = chosen ? 2.5 : 1.5;
    const cx = x(p.frame);
    const cy = top + laneHeight * 0.68;
    const r = chosen ? 7 : 5;
    ctx.beginPath(); ctx.moveTo(cx - r, cy - r); ctx.lineTo(cx + r, cy - r); ctx.lineTo(cx, cy + r); ctx.closePath();
    ctx.stroke();
    ctx.globalAlpha = 1;
  }
  for (const l of S.labels[S.current].values()) {
    if (!inView(l.frame)) continue;
    const k = S.classes.indexOf(l.label);
    const top = AXIS + k * laneHeight;
    const chosen = S.selected && S.selected.uid === l.uid;
    const cx = x(l.frame);
    const cy = top + laneHeight * 0.35;
    const r = chosen ? 7 : 5;
    ctx.fillStyle = COLOURS[k % COLOURS.length];
    ctx.beginPath(); ctx.moveTo(cx, cy - r); ctx.lineTo(cx + r, cy); ctx.lineTo(cx, cy + r); ctx.lineTo(cx - r, cy); ctx.closePath();
    ctx.fill();
    if (chosen) { ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.stroke(); }
  }
  ctx.fillStyle = "#e22";
  ctx.fillRect(x(S.frame) - 1, 0, 2, AXIS + K * laneHeight);
  ctx.lineWidth = 1;
}

canvas.addEventListener("click", (event) => {
  if (!S.ready) return;
  const rect = canvas.getBoundingClientRect();
  const px = event.clientX - rect.left;
  const py = event.clientY - rect.top;
  const { laneHeight, x, frameAt } = geometry();
  if (px < GUTTER) return;
  const k = Math.floor((py - AXIS) / laneHeight);
  let best = null;
  let bestDistance = 8;
  const consider = (kind, item) => {
    if (S.classes.indexOf(item.label) !== k) return;
    const d = Math.abs(x(item.frame) - px);
    if (d < bestDistance) { best = { kind, uid: item.uid }; bestDistance = d; }
  };
  for (const l of S.labels[S.current].values()) consider("label", l);
  for (const p of S.preds[S.current].values()) if (p.status === "open" && p.score >= S.threshold) consider("pred", p);
  if (best) select(best.kind, best.uid);
  else { S.selected = null; seek(frameAt(px)); }
});

canvas.addEventListener("wheel", (event) => {
  if (!S.ready) return;
  event.preventDefault();
  if (event.shiftKey) {
    const width = S.view.end - S.view.start;
    const shift = Math.round((Math.sign(event.deltaY || event.deltaX) * width) / 10);
    S.view.start = Math.max(0, Math.min(vid().num_frames - width, S.view.start + shift));
    S.view.end = S.view.start + width;
    render();
    return;
  }
  const rect = canvas.getBoundingClientRect();
  zoom(event.deltaY > 0 ? 1.25 : 0.8, geometry().frameAt(event.clientX - rect.left));
}, { passive: false });

// ------------------------------------------------------------------------------------------------ render

function render() {
  if (!S.videos.length) return;
  const v = vid();
  $("frame-input").value = S.frame;
  $("time").textContent = formatTime(S.frame / v.fps);
  document.body.dataset.frame = S.frame;
  $("play").textContent = S.playing ? "pause" : "play";
  const s = selected();
  $("selection").textContent = s ? `${s.kind === "pred" ? `prediction ${s.score.toFixed(3)}` : "label"}: ${s.label} at frame ${s.frame}` : "nothing selected";
  const n = unsavedCount();
  $("dirty").textContent = n ? `${n} unsaved change${n > 1 ? "s" : ""}` : "";
  $("version").textContent = `version ${S.version}`;
  $("threshold-value").textContent = S.threshold.toFixed(2);
  $("class-select").value = String(S.classIdx);
  renderList();
  drawTimeline();
}

// ------------------------------------------------------------------------------------------------ input

function onKey(event) {
  const tag = event.target.tagName;
  if ((tag === "INPUT" && event.target.type !== "range") || tag === "TEXTAREA") return;
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  const fps = Math.max(1, Math.round(vid() ? vid().fps : 25));
  let handled = true;
  if (ctrl && (key === "z" || key === "Z")) { if (event.shiftKey) redo(); else undo(); }
  else if (ctrl && (key === "y" || key === "Y")) redo();
  else if (ctrl && (key === "s" || key === "S")) save();
  else if (ctrl) handled = false;
  else if (key === "ArrowRight") seek(S.frame + (event.shiftKey ? fps : 1));
  else if (key === "ArrowLeft") seek(S.frame - (event.shiftKey ? fps : 1));
  else if (key === " ") play();
  else if (key === "a" || key === "A") accept();
  else if (key === "x" || key === "X") reject();
  else if (key === "," || key === "<") move(-1);
  else if (key === "." || key === ">") move(1);
  else if (key === "e" || key === "E" || key === "Insert") add();
  else if (key === "Delete" || key === "Backspace") remove();
  else if (key === "n" || key === "N") step(1);
  else if (key === "p" || key === "P") step(-1);
  else if (key === "Escape") { S.selected = null; render(); }
  else if (key === "+" || key === "=") zoom(0.8);
  else if (key === "-" || key === "_") zoom(1.25);
  else if (key === "[" || key === "]") {
    const at = SPEEDS.indexOf(Number($("speed").value));
    const next = SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, at + (key === "]" ? 1 : -1)))];
    setSpeed(next);
  } else if (/^[1-9]$/.test(key) && Number(key) <= S.classes.length) {
    S.classIdx = Number(key) - 1;
    relabel(S.classIdx);
    render();
  } else handled = false;
  if (handled) { event.preventDefault(); if (tag === "SELECT" || tag === "BUTTON") event.target.blur(); }
}

function setSpeed(speed) {
  $("speed").value = String(speed);
  video.defaultPlaybackRate = speed; // kept when another video is opened
  video.playbackRate = speed;
}

function wire() {
  document.addEventListener("keydown", onKey);
  $("back-second").onclick = () => seek(S.frame - Math.round(vid().fps));
  $("back-frame").onclick = () => seek(S.frame - 1);
  $("play").onclick = () => play();
  $("next-frame").onclick = () => seek(S.frame + 1);
  $("next-second").onclick = () => seek(S.frame + Math.round(vid().fps));
  $("speed").onchange = (e) => { setSpeed(Number(e.target.value)); e.target.blur(); };
  $("frame-input").onchange = (e) => { seek(Number(e.target.value)); e.target.blur(); };
  $("class-select").onchange = (e) => { S.classIdx = Number(e.target.value); e.target.blur(); render(); };
  $("video-select").onchange = (e) => { e.target.blur(); openVideo(Number(e.target.value)); };
  $("threshold").oninput = (e) => { S.threshold = Number(e.target.value); render(); };
  $("add").onclick = add;
  $("accept").onclick = accept;
  $("reject").onclick = reject;
  $("move-back").onclick = () => move(-1);
  $("move-on").onclick = () => move(1);
  $("delete").onclick = remove;
  $("undo").onclick = undo;
  $("redo").onclick = redo;
  $("save").onclick = save;
  document.querySelectorAll("#events th").forEach((th) => {
    th.onclick = () => {
      const key = th.dataset.sort;
      S.sort = { key, dir: S.sort.key === key ? -S.sort.dir : key === "score" ? -1 : 1 };
      render();
    };
  });
  window.addEventListener("resize", () => render());
  window.addEventListener("beforeunload", (event) => { if (unsavedCount()) { event.preventDefault(); event.returnValue = ""; } });
}

async function main() {
  wire();
  const state = await loadState();
  if (!state) return;
  adopt(state);
  S.threshold = state.threshold;
  $("threshold").value = String(S.threshold);
  $("video-select").replaceChildren(...S.videos.map((v, i) => new Option(`${v.video} (${v.num_frames} frames)`, String(i))));
  $("class-select").replaceChildren(...S.classes.map((c, i) => new Option(i < 9 ? `${i + 1}: ${c}` : c, String(i))));
  S.scores = S.videos.map(() => undefined);
  await openVideo(0);
}

main();
