/**
 * The page's assets as served: the markup, the stylesheet, the script (both halves joined in
 * one strict-mode function, with the icon table) and the favicon, each with a content hash for
 * its ETag. They are TS modules, not files, so they ship in the npm package as code.
 */
import { createHash } from "node:crypto"
import { listScript } from "./listScript.ts"
import { favicon, html, icons } from "./page.ts"
import { css } from "./style.ts"
import { viewScript } from "./viewScript.ts"

export interface Asset {
  readonly body: string
  readonly contentType: string
  readonly etag: string
}

const asset = (body: string, contentType: string): Asset => ({
  body,
  contentType,
  etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`
})

const script = `(function () {\n"use strict";\nvar ICONS = ${JSON.stringify(icons)};\n${listScript}\n${viewScript}\n})();\n`

export const assets = {
  page: asset(html, "text/html; charset=utf-8"),
  css: asset(css, "text/css; charset=utf-8"),
  js: asset(script, "text/javascript; charset=utf-8"),
  favicon: asset(favicon, "image/svg+xml")
} as const
