/**
 * The dev inbox page's markup: a header with search, the message list and the reading pane.
 * Everything dynamic is built by `app.ts` with DOM calls (`textContent`, never `innerHTML`
 * with message data). Assets live in TS modules so they ship in the npm package as code, with
 * no front-end build step and no CDN (the page must work on a machine without internet).
 */

/** Stroke icons (24×24, drawn with `currentColor`): constant markup, shared with `app.ts`. */
export const icons = {
  search: "<circle cx=\"11\" cy=\"11\" r=\"7\"/><path d=\"m20 20-3.5-3.5\"/>",
  moon: "<path d=\"M20 14.5A8 8 0 0 1 9.5 4a8 8 0 1 0 10.5 10.5Z\"/>",
  sun: "<circle cx=\"12\" cy=\"12\" r=\"4\"/><path d=\"M12 2v2M12 20v2M4.9 4.9l1.4 1.4M17.7 17.7l1.4 1.4M2 12h2M20 12h2M4.9 19.1l1.4-1.4M17.7 6.3l1.4-1.4\"/>",
  trash: "<path d=\"M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3\"/>",
  inbox: "<path d=\"M3 13h5l1.5 2.5h5L16 13h5\"/><path d=\"M5.5 5h13L21 13v6H3v-6l2.5-8Z\"/>",
  clip: "<path d=\"m20 11.5-8.2 8.2a5 5 0 0 1-7-7l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.5 8.5a1.7 1.7 0 0 1-2.4-2.4l7.8-7.8\"/>",
  download: "<path d=\"M12 4v11M7 10l5 5 5-5M5 20h14\"/>",
  send: "<path d=\"M21 3 10 14M21 3l-7 18-4-7-7-4 18-7Z\"/>",
  dot: "<circle cx=\"12\" cy=\"12\" r=\"4\"/>",
  file: "<path d=\"M6 3h8l4 4v14H6V3Z\"/><path d=\"M14 3v4h4\"/>"
} as const

const icon = (name: keyof typeof icons) => `<svg class="icon" viewBox="0 0 24 24" aria-hidden="true">${icons[name]}</svg>`

export const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>incoming dev</title>
<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/app.css">
<script src="/assets/app.js" defer></script>
</head>
<body>
<header class="bar">
  <a class="brand" href="/" aria-label="incoming dev inbox">
    ${icon("inbox")}<span class="brand-name">incoming</span><span class="brand-tag">dev</span>
  </a>
  <label class="search">
    ${icon("search")}
    <input id="search" type="search" placeholder="Search   from:  to:  subject:  has:attachment  is:unread" autocomplete="off" spellcheck="false" aria-label="Search messages">
    <kbd class="search-key">/</kbd>
  </label>
  <div class="bar-end">
    <span id="live" class="live" title="Live updates">live</span>
    <span id="smtp" class="smtp"></span>
    <button id="theme" class="icon-button" type="button" title="Light or dark (t)" aria-label="Toggle light or dark">
      <span class="theme-dark">${icon("moon")}</span><span class="theme-light">${icon("sun")}</span>
    </button>
    <button id="delete-all" class="button subtle" type="button" title="Delete every message">${icon("trash")}<span>Delete all</span></button>
  </div>
</header>
<main class="panes">
  <section class="list-pane" aria-label="Messages">
    <div class="list-head"><span id="count" class="count"></span><span id="unread" class="unread-count"></span></div>
    <div id="list" class="list" role="listbox" tabindex="0" aria-label="Messages"></div>
    <footer class="keys" title="u: mark unread / read · t: light / dark · Esc: close"><kbd>j</kbd><kbd>k</kbd> move <kbd>Enter</kbd> open <kbd>Del</kbd> delete <kbd>/</kbd> search</footer>
  </section>
  <section id="view" class="view" aria-live="polite"></section>
</main>
<dialog id="release" class="dialog">
  <form method="dialog" id="release-form">
    <h2>Release message</h2>
    <p class="dialog-text">Send this message, unchanged, through <strong id="release-server"></strong> to:</p>
    <input id="release-to" type="text" placeholder="alice@example.com, bob@example.com" autocomplete="off" spellcheck="false">
    <p class="dialog-hint">Allowed: <span id="release-allow"></span></p>
    <p id="release-result" class="dialog-result" role="status"></p>
    <div class="dialog-actions">
      <button value="cancel" class="button subtle" type="submit" formnovalidate>Close</button>
      <button id="release-send" value="send" class="button primary" type="submit">Send</button>
    </div>
  </form>
</dialog>
</body>
</html>
`

export const favicon = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><rect width="24" height="24" rx="6" fill="#5b5bd6"/><path fill="#fff" d="M5.5 7h13l1.5 6.5V18H4v-4.5L5.5 7Zm1.3 1.6-1 4.4h3l.8 1.6h4.8l.8-1.6h3l-1-4.4H6.8Z"/></svg>`
