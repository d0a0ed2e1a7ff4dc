/**
 * The page's script, second half: the reading pane (header, HTML / text / headers / source
 * tabs, attachments), the Release dialog and start-up. See `listScript.ts` for the rules both
 * halves follow.
 *
 * The HTML body is never put into this page: it loads from `/api/messages/:id/html` into an
 * iframe sandboxed without `allow-scripts` (and that response carries its own CSP), so a
 * message's scripts and event handlers cannot run, here or there.
 */
export const viewScript = String.raw`
var PREVIEWABLE = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"];
var SOURCE_LIMIT = 512 * 1024;
var current = null;
var currentTab = null;

function renderPlaceholder() {
  var view = $("view");
  view.textContent = "";
  var smtp = state.info ? state.info.smtp : "127.0.0.1:1025";
  var parts = smtp.split(":");
  var port = parts.pop();
  var host = parts.join(":").replace(/^\[|\]$/g, "");
  if (host === "0.0.0.0" || host === "::") host = "localhost";
  if (state.total === 0 && !state.query) {
    view.appendChild(h("div", { class: "placeholder" }, [
      icon("inbox"),
      h("h2", { text: "Waiting for mail" }),
      h("p", { text: "Point your app's SMTP settings at this inbox. Every message it sends shows up here as it arrives." }),
      h("pre", { text: "SMTP_HOST=" + host + "\nSMTP_PORT=" + port + "\n\n# any user name and password work; nothing is relayed" })
    ]));
  } else {
    view.appendChild(h("div", { class: "placeholder" }, [
      icon("inbox"),
      h("h2", { text: "No message selected" }),
      h("p", { text: "Pick one from the list, or use j / k and Enter." })
    ]));
  }
}

function closeMessage() {
  state.openId = null;
  current = null;
  document.body.classList.remove("reading");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  markOpen();
  renderPlaceholder();
}

function openMessage(id) {
  state.openId = id;
  markOpen();
  history.replaceState(null, "", location.pathname + location.search + "#" + id);
  return api("/api/messages/" + id).then(function (m) {
    if (state.openId !== id) return;
    current = m;
    document.body.classList.add("reading");
    renderMessage(m);
    if (m.unread) setUnread(id, false);
  }).catch(function (e) {
    if (state.openId === id) { toast("Could not open the message: " + e.message); closeMessage(); }
  });
}

function person(m) {
  return h("span", {}, m.name
    ? [h("span", { class: "name", text: m.name }), " ", h("span", { class: "addr", text: "<" + m.address + ">" })]
    : [h("span", { class: "name", text: m.address })]);
}

function people(list) {
  var out = h("dd", {});
  list.forEach(function (m, i) { if (i > 0) out.appendChild(document.createTextNode(", ")); out.appendChild(person(m)); });
  return out;
}

function updateUnreadButton(unread) {
  var b = $("toggle-unread");
  if (b) b.lastChild.textContent = unread ? "Mark read" : "Mark unread";
}

function renderMessage(m) {
  var view = $("view");
  view.textContent = "";
  var actions = h("div", { class: "actions" }, [
    state.info && state.info.release.enabled
      ? h("button", { class: "button subtle", type: "button", title: "Forward through the release server", onclick: function () { openRelease(m); } }, [icon("send"), h("span", { text: "Release" })])
      : null,
    h("button", { id: "toggle-unread", class: "button subtle", type: "button", title: "u", onclick: function () { setUnread(m.id, !(current && current.unread)); } }, [icon("dot"), h("span", { text: "Mark unread" })]),
    h("a", { class: "button subtle", href: m.rawUrl + "?download=1", download: m.id + ".eml", title: "Download the message as .eml" }, [icon("download"), h("span", { text: ".eml" })]),
    h("button", { class: "button subtle danger", type: "button", title: "Delete (Del)", onclick: function () { deleteMessage(m.id); } }, [icon("trash"), h("span", { text: "Delete" })])
  ]);
  var details = h("dl", { class: "people" }, [
    h("dt", { text: "From" }), m.from ? people([m.from]) : h("dd", { text: m.envelope.from || "<>" }),
    h("dt", { text: "To" }), m.to.length > 0 ? people(m.to) : h("dd", { text: m.envelope.to.join(", ") }),
    m.cc.length > 0 ? h("dt", { text: "Cc" }) : null, m.cc.length > 0 ? people(m.cc) : null,
    m.bcc.length > 0 ? h("dt", { text: "Bcc" }) : null, m.bcc.length > 0 ? people(m.bcc) : null,
    h("dt", { text: "Received" }), h("dd", { text: fullTime(m.receivedAt) + "  \u00b7  " + fmtSize(m.size) }),
    h("dt", { text: "Envelope" }), h("dd", { class: "envelope" }, [
      "MAIL FROM:<" + m.envelope.from + ">  RCPT TO:" + m.envelope.to.map(function (a) { return "<" + a + ">"; }).join(" "),
      m.envelope.secure ? h("span", { class: "badge", title: "Sent over STARTTLS", text: "TLS" }) : null,
      m.envelope.authenticatedUser !== null ? h("span", { class: "badge", title: "Logged in with AUTH as " + m.envelope.authenticatedUser, text: "AUTH " + m.envelope.authenticatedUser }) : null
    ])
  ]);
  var tabs = [
    { id: "html", label: "HTML", enabled: m.htmlUrl !== null },
    { id: "text", label: "Text", enabled: m.text !== null },
    { id: "headers", label: "Headers", enabled: true, n: m.headers.length },
    { id: "source", label: "Source", enabled: true }
  ];
  var tabBar = h("div", { class: "tabs", role: "tablist" }, tabs.map(function (t) {
    return h("button", { class: "tab", type: "button", role: "tab", "data-tab": t.id, disabled: !t.enabled, onclick: function () { showTab(m, t.id); } },
      [t.label, t.n !== undefined ? h("span", { class: "n", text: String(t.n) }) : null]);
  }));
  view.appendChild(h("article", { class: "message" }, [
    h("header", { class: "message-head" }, [
      h("div", { class: "message-title" }, [h("h1", { text: m.subject || "(no subject)" }), actions]),
      details,
      tabBar
    ]),
    h("div", { id: "message-body", class: "message-body" })
  ]));
  updateUnreadButton(m.unread);
  var preferred = currentTab && tabs.some(function (t) { return t.id === currentTab && t.enabled; }) ? currentTab : (m.htmlUrl !== null ? "html" : m.text !== null ? "text" : "headers");
  showTab(m, preferred);
}

function linkified(text) {
  var pre = h("pre", { class: "text-body" });
  var re = /\bhttps?:\/\/[^\s<>"')\]]+/g;
  var at = 0;
  var match;
  while ((match = re.exec(text)) !== null) {
    pre.appendChild(document.createTextNode(text.slice(at, match.index)));
    pre.appendChild(h("a", { href: match[0], target: "_blank", rel: "noopener noreferrer", text: match[0] }));
    at = match.index + match[0].length;
  }
  pre.appendChild(document.createTextNode(text.slice(at)));
  return pre;
}

function showTab(m, id) {
  currentTab = id;
  var buttons = document.querySelectorAll(".tab");
  for (var i = 0; i < buttons.length; i++) buttons[i].setAttribute("aria-selected", buttons[i].getAttribute("data-tab") === id ? "true" : "false");
  var body = $("message-body");
  body.textContent = "";
  if (id === "html") {
    body.appendChild(h("div", { class: "frame-wrap" }, [
      h("iframe", { src: m.htmlUrl, sandbox: "allow-popups allow-popups-to-escape-sandbox", referrerpolicy: "no-referrer", title: "Message HTML (sandboxed)" })
    ]));
  } else if (id === "text") {
    body.appendChild(linkified(m.text || ""));
  } else if (id === "headers") {
    body.appendChild(h("table", { class: "headers" }, [h("tbody", {}, m.headers.map(function (x) {
      return h("tr", {}, [h("td", { text: x.name }), h("td", { text: x.value })]);
    }))]));
  } else {
    var pre = h("pre", { class: "source", text: "Loading\u2026" });
    body.appendChild(pre);
    fetch(m.rawUrl).then(function (r) { return r.arrayBuffer(); }).then(function (buf) {
      if (!current || current.id !== m.id) return;
      var bytes = new Uint8Array(buf);
      pre.textContent = new TextDecoder("utf-8").decode(bytes.subarray(0, SOURCE_LIMIT));
      if (bytes.length > SOURCE_LIMIT) {
        body.insertBefore(h("p", { class: "note", text: "Showing the first " + fmtSize(SOURCE_LIMIT) + " of " + fmtSize(bytes.length) + "; download the .eml for all of it." }), pre);
      }
    }).catch(function (e) { pre.textContent = "Could not load the source: " + e.message; });
  }
  if (m.attachments.length > 0 && id !== "source" && id !== "headers") body.appendChild(attachmentsSection(m));
}

function extensionOf(name) {
  var dot = name.lastIndexOf(".");
  return dot > 0 && name.length - dot <= 6 ? name.slice(dot + 1).toUpperCase() : "FILE";
}

function attachmentsSection(m) {
  return h("section", { class: "attachments" }, [
    h("h3", { text: m.attachments.length + (m.attachments.length === 1 ? " attachment" : " attachments") }),
    h("div", { class: "attachment-grid" }, m.attachments.map(function (a) {
      var preview = PREVIEWABLE.indexOf(a.contentType) >= 0;
      return h("a", { class: "attachment", href: a.url + "?download=1", download: a.filename, title: "Download " + a.filename }, [
        h("div", { class: "thumb" }, [preview ? h("img", { src: a.url, alt: a.filename, loading: "lazy" }) : h("span", { text: extensionOf(a.filename) })]),
        h("div", { class: "attachment-meta" }, [
          h("span", { class: "attachment-name", text: a.filename }),
          h("span", { class: "attachment-info" }, [fmtSize(a.size) + " \u00b7 " + a.contentType, icon("download")])
        ])
      ]);
    }))
  ]);
}

/* release */

function openRelease(m) {
  var dialog = $("release");
  $("release-server").textContent = state.info.release.server;
  $("release-allow").textContent = state.info.release.allow.join(", ");
  $("release-result").textContent = "";
  $("release-result").className = "dialog-result";
  $("release-to").value = "";
  dialog.dataset.id = m.id;
  dialog.showModal();
  $("release-to").focus();
}

$("release-form").addEventListener("submit", function (e) {
  if (e.submitter && e.submitter.value !== "send") return;
  e.preventDefault();
  var dialog = $("release");
  var to = $("release-to").value.split(/[\s,;]+/).filter(Boolean);
  var result = $("release-result");
  result.className = "dialog-result";
  result.textContent = "Sending\u2026";
  $("release-send").disabled = true;
  send("POST", "/api/messages/" + dialog.dataset.id + "/release", { to: to }).then(function (r) {
    result.className = "dialog-result ok";
    result.textContent = "Sent to " + r.recipients.join(", ");
  }).catch(function (err) {
    result.className = "dialog-result error";
    result.textContent = err.message;
  }).then(function () { $("release-send").disabled = false; });
});

/* start */

$("theme").addEventListener("click", toggleTheme);
$("delete-all").addEventListener("click", deleteAll);
$("search").addEventListener("input", function (e) {
  clearTimeout(searchTimer);
  var value = e.target.value;
  searchTimer = setTimeout(function () { setQuery(value); }, 120);
});

(function start() {
  var q = new URL(location.href).searchParams.get("q") || "";
  state.query = q;
  $("search").value = q;
  var wanted = location.hash.slice(1);
  renderPlaceholder();
  api("/api/info").then(function (info) {
    state.info = info;
    $("smtp").textContent = "SMTP " + info.smtp;
    if (state.openId === null) renderPlaceholder();
  }).catch(function () { /* the list still works without it */ }).then(function () {
    connect();
    if (/^[0-9A-Z]{16}$/.test(wanted)) openMessage(wanted);
  });
})();
`
