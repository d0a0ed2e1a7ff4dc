/**
 * The dev inbox page's stylesheet: a two-pane layout (list, reading pane) on CSS variables, so
 * light and dark are one set of rules. Dark follows `prefers-color-scheme` unless the toggle
 * set `data-theme` on the root. The message's own HTML is not styled by this: it renders in
 * its sandboxed frame on white, as mail clients show it.
 */
const light: Readonly<Record<string, string>> = {
  "--bg": "#f6f6f8",
  "--panel": "#ffffff",
  "--raised": "#ffffff",
  "--line": "#e4e4ea",
  "--line-strong": "#d2d2db",
  "--text": "#1c1c24",
  "--muted": "#6b6b7b",
  "--faint": "#9a9aa8",
  "--accent": "#5b5bd6",
  "--accent-text": "#4646c2",
  "--accent-soft": "#ededfc",
  "--select": "#e9e9fb",
  "--hover": "#f3f3f7",
  "--danger": "#d13f4f",
  "--danger-soft": "#fdecee",
  "--ok": "#1f8a58",
  "--code-bg": "#f7f7fa",
  "--shadow": "0 1px 2px rgb(20 20 40 / 6%), 0 8px 24px rgb(20 20 40 / 6%)"
}

const dark: Readonly<Record<string, string>> = {
  "--bg": "#111116",
  "--panel": "#17171d",
  "--raised": "#1e1e26",
  "--line": "#2a2a33",
  "--line-strong": "#383843",
  "--text": "#e8e8ef",
  "--muted": "#a0a0b0",
  "--faint": "#6e6e7e",
  "--accent": "#8b8cf0",
  "--accent-text": "#a5a6f6",
  "--accent-soft": "#25254a",
  "--select": "#24243f",
  "--hover": "#1d1d25",
  "--danger": "#f0707d",
  "--danger-soft": "#3a1d22",
  "--ok": "#4cc38a",
  "--code-bg": "#14141a",
  "--shadow": "0 1px 2px rgb(0 0 0 / 40%), 0 8px 24px rgb(0 0 0 / 35%)"
}

const shared: Readonly<Record<string, string>> = {
  "--radius": "8px",
  "--sans": "Inter, ui-sans-serif, system-ui, -apple-system, \"Segoe UI\", Roboto, \"Helvetica Neue\", Arial, sans-serif",
  "--mono": "ui-monospace, \"SF Mono\", \"JetBrains Mono\", Menlo, Consolas, \"DejaVu Sans Mono\", monospace"
}

const block = (vars: Readonly<Record<string, string>>) => Object.entries(vars).map(([k, v]) => `  ${k}: ${v};`).join("\n")

// Dark applies when chosen with the toggle, or when the system prefers it and no choice was made.
const themes = `:root {\n  color-scheme: light;\n${block(shared)}\n${block(light)}\n}
:root[data-theme="dark"] {\n  color-scheme: dark;\n${block(dark)}\n}
@media (prefers-color-scheme: dark) {\n  :root:not([data-theme="light"]) {\n  color-scheme: dark;\n${block(dark)}\n  }\n}
`

export const css = themes + String.raw`
* { box-sizing: border-box; }
html, body { height: 100%; margin: 0; }
body {
  font: 14px/1.45 var(--sans);
  font-feature-settings: "cv11", "ss01";
  -webkit-font-smoothing: antialiased;
  background: var(--bg);
  color: var(--text);
  display: flex;
  flex-direction: column;
  overflow: hidden;
}
button, input { font: inherit; color: inherit; }
kbd {
  font: 500 11px/1 var(--mono);
  padding: 2px 5px;
  border: 1px solid var(--line-strong);
  border-bottom-width: 2px;
  border-radius: 4px;
  color: var(--muted);
  background: var(--panel);
}
.icon { width: 16px; height: 16px; flex: none; fill: none; stroke: currentColor; stroke-width: 1.8; stroke-linecap: round; stroke-linejoin: round; }

/* header */
.bar {
  display: flex;
  align-items: center;
  gap: 16px;
  padding: 10px 16px;
  background: var(--panel);
  border-bottom: 1px solid var(--line);
  flex: none;
}
.brand { display: flex; align-items: center; gap: 7px; color: var(--text); text-decoration: none; font-weight: 650; letter-spacing: -0.01em; }
.brand .icon { width: 20px; height: 20px; color: var(--accent); stroke-width: 2; }
.brand-tag {
  font: 600 10.5px/1 var(--sans);
  text-transform: uppercase;
  letter-spacing: 0.06em;
  color: var(--accent-text);
  background: var(--accent-soft);
  padding: 3px 6px;
  border-radius: 999px;
}
.search {
  flex: 1;
  max-width: 620px;
  display: flex;
  align-items: center;
  gap: 8px;
  padding: 0 10px;
  height: 34px;
  background: var(--bg);
  border: 1px solid var(--line);
  border-radius: var(--radius);
  color: var(--faint);
  transition: border-color .15s, box-shadow .15s;
}
.search:focus-within { border-color: var(--accent); box-shadow: 0 0 0 3px var(--accent-soft); color: var(--accent); }
.search input { flex: 1; border: 0; outline: 0; background: transparent; min-width: 0; color: var(--text); }
.search input::placeholder { color: var(--faint); word-spacing: 2px; }
.search input::-webkit-search-cancel-button { cursor: pointer; }
.bar-end { margin-left: auto; display: flex; align-items: center; gap: 10px; }
.smtp { font: 12px var(--mono); color: var(--muted); }
.live { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--faint); }
.live::before { content: ""; width: 7px; height: 7px; border-radius: 50%; background: var(--faint); }
.live.on { color: var(--ok); }
.live.on::before { background: var(--ok); box-shadow: 0 0 0 3px color-mix(in srgb, var(--ok) 22%, transparent); }
.button, .icon-button {
  display: inline-flex;
  align-items: center;
  gap: 6px;
  height: 32px;
  padding: 0 12px;
  border-radius: var(--radius);
  border: 1px solid var(--line-strong);
  background: var(--raised);
  cursor: pointer;
  font-weight: 500;
  font-size: 13px;
  text-decoration: none;
  color: var(--text);
  white-space: nowrap;
}
.button:hover, .icon-button:hover { background: var(--hover); }
.button:focus-visible, .icon-button:focus-visible { outline: 2px solid var(--accent); outline-offset: 1px; }
.button.subtle { border-color: transparent; background: transparent; color: var(--muted); }
.button.subtle:hover { background: var(--hover); color: var(--text); }
.button.danger:hover { color: var(--danger); background: var(--danger-soft); border-color: transparent; }
.button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
.button.primary:hover { filter: brightness(1.07); background: var(--accent); }
.button:disabled { opacity: .5; cursor: default; }
.icon-button { width: 32px; padding: 0; justify-content: center; border-color: transparent; background: transparent; color: var(--muted); }
.theme-light { display: none; }
:root[data-theme="dark"] .theme-light { display: inline-flex; }
:root[data-theme="dark"] .theme-dark { display: none; }

/* panes */
.panes { flex: 1; display: grid; grid-template-columns: minmax(320px, 400px) 1fr; min-height: 0; }
.list-pane { display: flex; flex-direction: column; min-height: 0; background: var(--panel); border-right: 1px solid var(--line); }
.list-head { display: flex; justify-content: space-between; padding: 10px 16px 8px; font-size: 12px; color: var(--muted); border-bottom: 1px solid var(--line); }
.unread-count { color: var(--accent-text); font-weight: 600; }
.list { flex: 1; overflow-y: auto; outline: none; }
.keys { padding: 8px 16px; border-top: 1px solid var(--line); font-size: 11.5px; color: var(--faint); display: flex; gap: 4px; align-items: center; white-space: nowrap; overflow: hidden; }
.keys kbd { margin-left: 6px; }
.keys kbd:first-child { margin-left: 0; }
.row {
  position: relative;
  padding: 10px 16px 11px 20px;
  border-bottom: 1px solid var(--line);
  cursor: pointer;
  display: grid;
  gap: 1px;
}
.row:hover { background: var(--hover); }
.row.selected { background: var(--select); }
.row.open::after { content: ""; position: absolute; right: 0; top: 0; bottom: 0; width: 3px; background: var(--accent); }
.row.unread::before { content: ""; position: absolute; left: 8px; top: 16px; width: 6px; height: 6px; border-radius: 50%; background: var(--accent); }
.row-top, .row-bottom { display: flex; align-items: baseline; gap: 8px; min-width: 0; }
.row-from { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 500; }
.row.unread .row-from, .row.unread .row-subject { font-weight: 650; }
.row-time { flex: none; font-size: 12px; color: var(--muted); font-variant-numeric: tabular-nums; }
.row-subject { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; display: flex; align-items: center; gap: 6px; }
.row-subject span { overflow: hidden; text-overflow: ellipsis; }
.row-subject .icon { width: 14px; height: 14px; color: var(--muted); }
.row-snippet { font-size: 12.5px; color: var(--muted); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.row-bottom { font-size: 12px; color: var(--faint); }
.row-to { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.row-size { flex: none; font-variant-numeric: tabular-nums; }
.row.fresh { animation: fresh 1.2s ease-out; }
@keyframes fresh { from { background: var(--accent-soft); } }
.empty-list { padding: 40px 24px; text-align: center; color: var(--muted); }

/* reading pane */
.view { overflow: hidden; display: flex; flex-direction: column; min-width: 0; background: var(--bg); }
.placeholder { margin: auto; text-align: center; color: var(--muted); max-width: 460px; padding: 24px; }
.placeholder .icon { width: 40px; height: 40px; color: var(--faint); stroke-width: 1.4; }
.placeholder h2 { color: var(--text); font-size: 17px; margin: 12px 0 6px; font-weight: 600; }
.placeholder pre { text-align: left; font: 12.5px/1.6 var(--mono); background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); padding: 12px 14px; color: var(--text); overflow-x: auto; }
.message { display: flex; flex-direction: column; min-height: 0; flex: 1; }
.message-head { padding: 18px 24px 0; background: var(--panel); border-bottom: 1px solid var(--line); }
.message-title { display: flex; align-items: flex-start; gap: 16px; }
.message-title h1 { flex: 1; margin: 0; font-size: 19px; line-height: 1.3; font-weight: 650; letter-spacing: -0.015em; word-break: break-word; }
.actions { display: flex; gap: 4px; flex: none; }
.people { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 12px 0 14px; font-size: 13px; }
.people dt { color: var(--faint); }
.people dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
.people .name { font-weight: 550; }
.people .addr { color: var(--muted); }
.people .envelope { font: 12px var(--mono); color: var(--muted); }
.badge { font: 600 11px/1 var(--sans); padding: 3px 6px; border-radius: 4px; background: var(--accent-soft); color: var(--accent-text); margin-left: 8px; vertical-align: 1px; }
.tabs { display: flex; gap: 2px; margin: 0 -8px; }
.tab {
  border: 0;
  background: none;
  padding: 8px 10px 10px;
  cursor: pointer;
  color: var(--muted);
  font-weight: 500;
  font-size: 13px;
  border-bottom: 2px solid transparent;
}
.tab:hover { color: var(--text); }
.tab[aria-selected="true"] { color: var(--text); border-bottom-color: var(--accent); }
.tab:disabled { color: var(--faint); cursor: default; opacity: .6; }
.tab .n { font-size: 11px; color: var(--faint); margin-left: 4px; font-variant-numeric: tabular-nums; }
.message-body { flex: 1; min-height: 0; overflow: auto; padding: 16px 24px 24px; display: flex; flex-direction: column; gap: 16px; }
.frame-wrap { flex: 1; min-height: 360px; display: flex; background: #fff; border: 1px solid var(--line); border-radius: var(--radius); overflow: hidden; box-shadow: var(--shadow); }
.frame-wrap iframe { flex: 1; border: 0; width: 100%; background: #fff; color-scheme: light; }
.text-body, .source {
  margin: 0;
  padding: 16px 18px;
  font: 13px/1.6 var(--mono);
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  background: var(--panel);
  border: 1px solid var(--line);
  border-radius: var(--radius);
}
.text-body { font-family: var(--sans); font-size: 14px; line-height: 1.6; }
.text-body a { color: var(--accent-text); }
.source { font-size: 12px; line-height: 1.55; background: var(--code-bg); }
.note { font-size: 12.5px; color: var(--muted); }
.headers { width: 100%; border-collapse: collapse; font-size: 12.5px; background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); overflow: hidden; }
.headers td { padding: 6px 12px; border-bottom: 1px solid var(--line); vertical-align: top; }
.headers tr:last-child td { border-bottom: 0; }
.headers td:first-child { font-weight: 550; color: var(--muted); white-space: nowrap; width: 1%; }
.headers td:last-child { font-family: var(--mono); font-size: 12px; overflow-wrap: anywhere; }
.attachments h3 { margin: 0 0 8px; font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
.attachment-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px; }
.attachment { display: flex; flex-direction: column; background: var(--panel); border: 1px solid var(--line); border-radius: var(--radius); overflow: hidden; color: inherit; text-decoration: none; }
.attachment:hover { border-color: var(--line-strong); box-shadow: var(--shadow); }
.thumb { height: 96px; display: flex; align-items: center; justify-content: center; background: var(--code-bg); border-bottom: 1px solid var(--line); color: var(--faint); font: 600 13px var(--mono); }
.thumb img { width: 100%; height: 100%; object-fit: cover; object-position: center top; }
.attachment-meta { padding: 8px 10px; display: grid; gap: 1px; }
.attachment-name { font-weight: 550; font-size: 13px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.attachment-info { font-size: 11.5px; color: var(--muted); display: flex; gap: 6px; align-items: center; }
.attachment-info .icon { width: 13px; height: 13px; margin-left: auto; }

/* release dialog */
.dialog { border: 1px solid var(--line); border-radius: 12px; padding: 0; width: min(460px, 92vw); background: var(--raised); color: var(--text); box-shadow: var(--shadow); }
.dialog::backdrop { background: rgb(10 10 20 / 35%); }
.dialog form { padding: 20px; display: grid; gap: 10px; }
.dialog h2 { margin: 0; font-size: 16px; }
.dialog p { margin: 0; }
.dialog-text { color: var(--muted); font-size: 13px; }
.dialog input { height: 36px; padding: 0 10px; border: 1px solid var(--line-strong); border-radius: var(--radius); background: var(--panel); }
.dialog input:focus { outline: 2px solid var(--accent); outline-offset: -1px; }
.dialog-hint { font-size: 12px; color: var(--faint); }
.dialog-result { font-size: 13px; min-height: 1em; }
.dialog-result.error { color: var(--danger); }
.dialog-result.ok { color: var(--ok); }
.dialog-actions { display: flex; justify-content: flex-end; gap: 8px; margin-top: 4px; }

.toast { position: fixed; bottom: 18px; left: 50%; transform: translateX(-50%); background: var(--text); color: var(--bg); padding: 8px 14px; border-radius: var(--radius); font-size: 13px; box-shadow: var(--shadow); opacity: 0; transition: opacity .2s; pointer-events: none; }
.toast.show { opacity: 1; }

@media (max-width: 860px) {
  .panes { grid-template-columns: 1fr; }
  .view { display: none; }
  body.reading .list-pane { display: none; }
  body.reading .view { display: flex; }
  .smtp, .keys { display: none; }
}
`
