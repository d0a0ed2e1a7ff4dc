/**
 * The environment's two ways into the configuration, applied to the parsed document before it
 * is decoded:
 *
 * - `${VAR}` inside a string value is replaced by that variable (`${VAR:-fallback}` when it may be
 *   unset; `$${` writes a literal `${`). This is how secrets stay out of the file. A value that
 *   is exactly one reference takes the type the schema wants there, so `port = "${SMTP_PORT}"`
 *   is a number.
 * - `INCOMING_<PATH>` sets the setting at PATH: the key path upper-cased and joined with `_`,
 *   list indices as numbers (`INCOMING_ADMIN_LISTEN`, `INCOMING_QUEUE_MAX_DEPTH`,
 *   `INCOMING_LISTENERS_0_PORT`). Words are matched against the schema's keys, so underscores
 *   inside a key are not ambiguous. A variable that names no setting is an error (a typo must not
 *   be ignored) unless the file refers to it as `${INCOMING_...}`.
 *
 * Both report problems as `ConfigIssue`s and record which paths they set, so that a bad value
 * is blamed on the variable that supplied it rather than on the file.
 */
import type { ConfigIssue } from "./ConfigError.ts"
import { defaultListeners } from "./IncomingConfig.ts"
import { astAt, coerce, formatPath, isTree, leafKind, type Path, pathOfWords, setAt, type Tree } from "./Shape.ts"

export type Env = Readonly<Record<string, string | undefined>>

export const prefix = "INCOMING_"

/** Which source set each path (`formatPath`), for blaming a bad value on the right thing. */
export type Sources = Map<string, string>

const reference = /\$\$\{|\$\{([^}]*)\}|\$\{/g
const referenceBody = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s

export interface Interpolated {
  readonly issues: ReadonlyArray<ConfigIssue>
  /** Variables the document referred to (set or not). */
  readonly referenced: ReadonlySet<string>
}

/** Replaces `${VAR}` references in every string value of `tree`, in place. */
export const interpolate = (tree: Tree, env: Env, source: string): Interpolated => {
  const issues: Array<ConfigIssue> = []
  const referenced = new Set<string>()

  const substitute = (text: string, path: Path): unknown => {
    if (!text.includes("${")) return text
    let whole = false
    const replaced = text.replace(reference, (match, body: string | undefined, offset: number) => {
      if (match === "$${") return "${"
      const m = body === undefined ? null : referenceBody.exec(body)
      if (m === null) {
        issues.push({ source, path: formatPath(path), message: `bad reference "${match}": expected \${NAME} or \${NAME:-default}` })
        return match
      }
      const name = m[1]!
      referenced.add(name)
      whole = offset === 0 && match.length === text.length
      const value = env[name] ?? m[2]
      if (value === undefined) {
        issues.push({ source, path: formatPath(path), message: `environment variable ${name} is not set (referenced as \${${name}})` })
        return ""
      }
      return value
    })
    if (!whole) return replaced
    const ast = astAt(path)
    const kind = ast === undefined ? undefined : leafKind(ast)
    return kind === undefined ? replaced : coerce(kind, replaced)
  }

  const walk = (node: unknown, path: Path): unknown => {
    if (typeof node === "string") return substitute(node, path)
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) node[i] = walk(node[i], [...path, i])
      return node
    }
    if (isTree(node)) {
      for (const k of Object.keys(node)) node[k] = walk(node[k], [...path, k])
    }
    return node
  }
  walk(tree, [])
  return { issues, referenced }
}

/**
 * Before a setting of one listener is overridden, a document without `listeners` gets the
 * default listener, so that `INCOMING_LISTENERS_0_MAX_SIZE` alone changes the default listener
 * instead of creating one with no port.
 */
export const materializeListeners = (tree: Tree): void => {
  if (tree.listeners === undefined) tree.listeners = defaultListeners.map((l) => ({ ...l }))
}

export interface Overridden {
  readonly issues: ReadonlyArray<ConfigIssue>
  /** The paths set, each with the variable that set it. */
  readonly applied: ReadonlyArray<{ readonly path: Path; readonly variable: string }>
}

/** Applies every `INCOMING_*` variable to `tree`, in place. */
export const applyOverrides = (tree: Tree, env: Env, referenced: ReadonlySet<string>): Overridden => {
  const issues: Array<ConfigIssue> = []
  const applied: Array<{ path: Path; variable: string }> = []
  // Natural order, so LISTENERS_0 is set before LISTENERS_1 (an index may only append).
  const names = Object.keys(env)
    .filter((n) => n.startsWith(prefix) && env[n] !== undefined && !referenced.has(n))
    .sort((a, b) => a.localeCompare(b, "en", { numeric: true }))
  for (const variable of names) {
    const source = `env ${variable}`
    const path = pathOfWords(variable.slice(prefix.length).split("_"))
    if (path === undefined) {
      issues.push({ source, path: "", message: `names no setting (INCOMING_ + the key path in upper case, joined with "_", e.g. INCOMING_LISTENERS_0_PORT)` })
      continue
    }
    if (path[0] === "listeners") materializeListeners(tree)
    const ast = astAt(path)
    const kind = ast === undefined ? undefined : leafKind(ast)
    const text = env[variable]!
    const problem = setAt(tree, path, kind === undefined ? text : coerce(kind, text))
    if (problem !== undefined) issues.push({ source, path: formatPath(path), message: problem })
    else applied.push({ path, variable })
  }
  return { issues, applied }
}
