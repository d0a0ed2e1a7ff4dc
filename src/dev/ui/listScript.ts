/**
 * The page's script, first half: state, the API and live-update plumbing, the message list,
 * search, theme and keyboard navigation. `viewScript.ts` renders the reading pane; `app.ts`
 * joins both into the one served script.
 *
 * Written as plain browser JavaScript in a string (no bundler, no framework): it builds every
 * element with DOM calls and sets message data only through `textContent` and attributes, so
 * nothing a sender wrote is ever parsed as HTML in the page's own origin.
 */
export const listScript = String.raw`
var state = {
  query: "",
  messages: [],
  total: 0,
  unread: 0,
  cursor: -1,
  openId: null,
  info: null,
  loadSeq: 0
};
var SVGNS = "http://www.w3.org/2000/svg";
var THEME_KEY = "incoming-dev-theme";

function $(id) { return document.getElementById(id); }

function h(tag, attrs, children) {
  var el = document.createElement(tag);
  if (attrs) {
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") el.textContent = v;
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    });
  }
  (children || []).forEach(function (c) {
    if (c === null || c === undefined || c === false) return;
    el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  });
  return el;
}

function icon(name) {
  var s = document.createElementNS(SVGNS, "svg");
  s.setAttribute("viewBox", "0 0 24 24");
  s.setAttribute("class", "icon");
  s.setAttribute("aria-hidden", "true");
  // Constant markup from the server's icon table, never message data.
  s.innerHTML = ICONS[name];
  return s;
}

function api(path, options) {
  return fetch(path, options).then(function (r) {
    var type = r.headers.get("content-type") || "";
    var body = type.indexOf("application/json") === 0 ? r.json() : r.text();
    return body.then(function (b) {
      if (!r.ok) throw new Error((b && b.error) || ("HTTP " + r.status));
      return b;
    });
  });
}

function send(method, path, body) {
  return api(path, {
    method: method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body)
  });
}

var toastTimer = 0;
function toast(text) {
  var el = $("toast") || document.body.appendChild(h("div", { id: "toast", class: "toast", role: "status" }));
  el.textContent = text;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(function () { el.classList.remove("show"); }, 2600);
}

function fmtSize(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + " KB";
  return (n / 1048576).toFixed(1) + " MB";
}

function fmtTime(iso) {
  var d = new Date(iso);
  var now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.getFullYear() === now.getFullYear()) return d.toLocaleDateString([], { month: "short", day: "numeric" });
  return d.toLocaleDateString();
}

function fullTime(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
}

function mailboxText(m) { return m.name ? m.name : m.address; }

function fromText(msg) {
  if (msg.from) return mailboxText(msg.from);
  return msg.envelope.from || "<>";
}

function toText(msg) {
  var list = msg.to.concat(msg.cc);
  if (list.length === 0) return msg.envelope.to.join(", ");
  return list.map(function (m) { return m.address; }).join(", ");
}

/* theme */

var media = window.matchMedia("(prefers-color-scheme: dark)");
function applyTheme(theme) { document.documentElement.setAttribute("data-theme", theme); }
function storedTheme() { try { return localStorage.getItem(THEME_KEY); } catch (e) { return null; } }
applyTheme(storedTheme() || (media.matches ? "dark" : "light"));
media.addEventListener("change", function () { if (!storedTheme()) applyTheme(media.matches ? "dark" : "light"); });
function toggleTheme() {
  var next = document.documentElement.getAttribute("data-theme") === "dark" ? "light" : "dark";
  applyTheme(next);
  try { localStorage.setItem(THEME_KEY, next); } catch (e) { /* private mode: not remembered */ }
}

/* list */

function rowFor(msg, index) {
  var classes = "row" + (msg.unread ? " unread" : "") + (index === state.cursor ? " selected" : "") + (msg.id === state.openId ? " open" : "");
  var subject = h("div", { class: "row-subject" }, [
    msg.attachmentCount > 0 ? icon("clip") : null,
    h("span", { text: msg.subject || "(no subject)" })
  ]);
  if (msg.attachmentCount > 0) subject.firstChild.setAttribute("aria-label", msg.attachmentCount + " attachments");
  return h("div", {
    class: classes,
    role: "option",
    "aria-selected": index === state.cursor ? "true" : "false",
    "data-id": msg.id,
    onclick: function () { select(index); openMessage(msg.id); }
  }, [
    h("div", { class: "row-top" }, [
      h("span", { class: "row-from", text: fromText(msg) }),
      h("time", { class: "row-time", datetime: msg.receivedAt, title: fullTime(msg.receivedAt), text: fmtTime(msg.receivedAt) })
    ]),
    subject,
    msg.snippet ? h("div", { class: "row-snippet", text: msg.snippet }) : null,
    h("div", { class: "row-bottom" }, [
      h("span", { class: "row-to", text: "to " + toText(msg) }),
      h("span", { class: "row-size", text: fmtSize(msg.size) })
    ])
  ]);
}

function renderList(freshId) {
  var list = $("list");
  list.textContent = "";
  if (state.messages.length === 0) {
    list.appendChild(h("div", { class: "empty-list", text: state.query ? "Nothing matches this search." : "No messages yet." }));
  }
  state.messages.forEach(function (msg, i) {
    var row = rowFor(msg, i);
    if (msg.id === freshId) row.classList.add("fresh");
    list.appendChild(row);
  });
  var shown = state.messages.length;
  $("count").textContent = state.query
    ? state.total + (state.total === 1 ? " match" : " matches")
    : state.total + (state.total === 1 ? " message" : " messages") + (shown < state.total ? " (newest " + shown + ")" : "");
  $("unread").textContent = state.unread > 0 ? state.unread + " unread" : "";
  document.title = (state.unread > 0 ? "(" + state.unread + ") " : "") + "incoming dev";
  if (state.openId === null) renderPlaceholder();
}

function select(index) {
  if (state.messages.length === 0) { state.cursor = -1; return; }
  state.cursor = Math.max(0, Math.min(index, state.messages.length - 1));
  var rows = $("list").children;
  for (var i = 0; i < rows.length; i++) {
    rows[i].classList.toggle("selected", i === state.cursor);
    rows[i].setAttribute("aria-selected", i === state.cursor ? "true" : "false");
  }
  var row = rows[state.cursor];
  if (row) row.scrollIntoView({ block: "nearest" });
}

function markOpen() {
  var rows = $("list").children;
  for (var i = 0; i < rows.length; i++) rows[i].classList.toggle("open", rows[i].getAttribute("data-id") === state.openId);
}

function load() {
  var seq = ++state.loadSeq;
  var url = "/api/messages?limit=500" + (state.query ? "&query=" + encodeURIComponent(state.query) : "");
  return api(url).then(function (r) {
    if (seq !== state.loadSeq) return;
    var selectedId = state.messages[state.cursor] ? state.messages[state.cursor].id : null;
    state.messages = r.messages;
    state.total = r.total;
    state.unread = r.unread;
    var again = state.messages.findIndex(function (m) { return m.id === selectedId; });
    state.cursor = again >= 0 ? again : (state.messages.length > 0 ? Math.min(Math.max(state.cursor, 0), state.messages.length - 1) : -1);
    renderList(null);
  }).catch(function (e) { toast("Could not load messages: " + e.message); });
}

/* live updates */

var events = null;
function connect() {
  events = new EventSource("/api/events");
  events.addEventListener("ready", function () {
    $("live").classList.add("on");
    $("live").title = "Live: new mail appears as it arrives";
    load();
  });
  events.addEventListener("added", function (e) {
    var msg = JSON.parse(e.data);
    if (state.query) { load(); return; }
    if (state.messages.some(function (m) { return m.id === msg.id; })) return;
    state.messages.unshift(msg);
    state.total += 1;
    if (msg.unread) state.unread += 1;
    if (state.cursor >= 0) state.cursor += 1;
    renderList(msg.id);
  });
  events.addEventListener("updated", function (e) {
    var msg = JSON.parse(e.data);
    var i = state.messages.findIndex(function (m) { return m.id === msg.id; });
    if (i < 0) return;
    if (state.messages[i].unread !== msg.unread) state.unread += msg.unread ? 1 : -1;
    state.messages[i] = msg;
    var row = $("list").children[i];
    if (row) row.classList.toggle("unread", msg.unread);
    renderCounts();
    if (msg.id === state.openId) updateUnreadButton(msg.unread);
  });
  events.addEventListener("removed", function (e) {
    var ids = JSON.parse(e.data).ids;
    var before = state.messages.length;
    var selectedId = state.messages[state.cursor] ? state.messages[state.cursor].id : null;
    state.messages = state.messages.filter(function (m) {
      var gone = ids.indexOf(m.id) >= 0;
      if (gone && m.unread) state.unread -= 1;
      return !gone;
    });
    state.total -= before - state.messages.length;
    var again = state.messages.findIndex(function (m) { return m.id === selectedId; });
    state.cursor = again >= 0 ? again : Math.min(state.cursor, state.messages.length - 1);
    if (ids.indexOf(state.openId) >= 0) closeMessage();
    renderList(null);
  });
  events.addEventListener("cleared", function () {
    state.messages = [];
    state.total = 0;
    state.unread = 0;
    state.cursor = -1;
    closeMessage();
    renderList(null);
  });
  events.onerror = function () { $("live").classList.remove("on"); $("live").title = "Reconnecting\u2026"; };
}

function renderCounts() {
  $("unread").textContent = state.unread > 0 ? state.unread + " unread" : "";
  document.title = (state.unread > 0 ? "(" + state.unread + ") " : "") + "incoming dev";
}

/* search */

var searchTimer = 0;
function setQuery(q) {
  state.query = q.trim();
  var url = new URL(location.href);
  if (state.query) url.searchParams.set("q", state.query); else url.searchParams.delete("q");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
  state.cursor = 0;
  load();
}

/* actions on the selected message */

function selectedMessage() { return state.messages[state.cursor] || null; }

function deleteMessage(id) {
  if (!id) return;
  var i = state.messages.findIndex(function (m) { return m.id === id; });
  send("DELETE", "/api/messages/" + id).then(function () {
    if (i >= 0 && state.openId === id) {
      var next = state.messages[i + 1] || state.messages[i - 1];
      closeMessage();
      if (next) { state.cursor = i; openMessage(next.id); }
    }
  }).catch(function (e) { toast("Delete failed: " + e.message); });
}

function deleteAll() {
  if (state.total === 0) return;
  if (!confirm("Delete all " + state.total + " messages?")) return;
  send("DELETE", "/api/messages").then(function (r) { toast("Deleted " + r.deleted + " messages"); })
    .catch(function (e) { toast("Delete failed: " + e.message); });
}

function setUnread(id, unread) {
  return send("PATCH", "/api/messages/" + id, { unread: unread }).catch(function (e) { toast(e.message); });
}

/* keyboard */

function typing(el) { return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.isContentEditable); }

document.addEventListener("keydown", function (e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if ($("release").open) return;
  var search = $("search");
  if (typing(e.target)) {
    if (e.target === search && e.key === "Escape") {
      if (search.value) { search.value = ""; setQuery(""); } else search.blur();
      e.preventDefault();
    } else if (e.target === search && (e.key === "Enter" || e.key === "ArrowDown")) {
      search.blur();
      $("list").focus();
      select(0);
      e.preventDefault();
    }
    return;
  }
  var msg = selectedMessage();
  switch (e.key) {
    case "j": case "ArrowDown": select(state.cursor + 1); break;
    case "k": case "ArrowUp": select(state.cursor - 1); break;
    case "Enter": case "o": if (msg) openMessage(msg.id); break;
    case "Delete": case "Backspace": case "#": if (msg) deleteMessage(msg.id); break;
    case "u": if (msg) setUnread(msg.id, !msg.unread); break;
    case "/": search.focus(); search.select(); break;
    case "t": toggleTheme(); break;
    case "Escape": closeMessage(); break;
    default: return;
  }
  e.preventDefault();
});
`
