/**
 * Why a configuration could not be used. Every line an operator sees names where the bad value
 * came from (the file, an `INCOMING_*` variable, a command-line flag), the path to the field
 * and what was expected: `incoming.toml: listeners[1].tls.cert: file not found: /x.pem`.
 */
import { Data } from "effect"

export interface ConfigIssue {
  /** Where the value came from: a file name, `env INCOMING_X`, `--flag`, or `defaults`. */
  readonly source: string
  /** `listeners[1].tls.cert`; empty for the document as a whole. */
  readonly path: string
  readonly message: string
}

export type ConfigErrorReason =
  /** `--config PATH` names a file that does not exist (the lookup of default paths never fails). */
  | { readonly _tag: "NotFound"; readonly file: string }
  | { readonly _tag: "Unreadable"; readonly file: string; readonly detail: string }
  | { readonly _tag: "UnsupportedFormat"; readonly file: string }
  | { readonly _tag: "Syntax"; readonly file: string; readonly line?: number | undefined; readonly column?: number | undefined; readonly detail: string }
  | { readonly _tag: "Invalid"; readonly issues: ReadonlyArray<ConfigIssue> }

export const formatIssue = (i: ConfigIssue): string => [i.source, i.path, i.message].filter((s) => s !== "").join(": ")

export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly reason: ConfigErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    const r = this.reason
    switch (r._tag) {
      case "NotFound":
        return `${r.file}: file not found`
      case "Unreadable":
        return `${r.file}: cannot read: ${r.detail}`
      case "UnsupportedFormat":
        return `${r.file}: unsupported format (expected a .toml, .json, .yaml or .yml file)`
      case "Syntax":
        return `${r.file}${r.line !== undefined ? `:${r.line}${r.column !== undefined ? `:${r.column}` : ""}` : ""}: syntax error: ${r.detail}`
      case "Invalid":
        return r.issues.map(formatIssue).join("\n")
    }
  }
}

export const isConfigError = (u: unknown): u is ConfigError => u instanceof ConfigError

export const invalid = (issues: ReadonlyArray<ConfigIssue>): ConfigError => new ConfigError({ reason: { _tag: "Invalid", issues } })
