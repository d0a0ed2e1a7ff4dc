/**
 * The effective configuration as text, for `incoming check-config` and the debug log line at
 * start-up: defaults filled in, durations and sizes back in human units, and every secret
 * replaced by `<redacted>` before anything is encoded, so no code path here can print one.
 */
import { Redacted, Schema } from "effect"
import { stringify as stringifyToml } from "smol-toml"
import { stringify as stringifyYaml } from "yaml"
import { IncomingConfig } from "./IncomingConfig.ts"

export const redactedMarker = "<redacted>"

export type RenderFormat = "toml" | "json" | "yaml"

/** A copy of `value` with every `Redacted` replaced by one that holds only the marker. */
export const redactAll = <A>(value: A): A => {
  const go = (v: unknown): unknown => {
    if (Redacted.isRedacted(v)) return Redacted.make(redactedMarker)
    if (Array.isArray(v)) return v.map(go)
    if (typeof v === "object" && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, go(x)]))
    return v
  }
  return go(value) as A
}

/**
 * The config in its file shape (snake_case keys, "30s", "25MiB"), secrets redacted. With
 * `routes`, `delivery.adapter` is left out: it is not used then, and the loader refuses a file
 * that sets both, so the printed document stays a valid config file.
 */
export const toDocument = (config: IncomingConfig): typeof IncomingConfig.Encoded => {
  const doc = Schema.encodeSync(IncomingConfig)(redactAll(config))
  if (config.routes === undefined || doc.delivery === undefined) return doc
  const { adapter: _unused, ...delivery } = doc.delivery
  return { ...doc, delivery }
}

export const render = (config: IncomingConfig, format: RenderFormat): string => {
  const doc = toDocument(config)
  switch (format) {
    case "json":
      return `${JSON.stringify(doc, null, 2)}\n`
    case "yaml":
      return stringifyYaml(doc)
    case "toml":
      return `${stringifyToml(doc)}\n`
  }
}
