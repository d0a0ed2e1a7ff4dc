/**
 * The config document as a tree of plain values, and what the schema expects at each place in
 * it. Environment overrides need both: `INCOMING_QUEUE_MAX_DEPTH` can only be split into
 * `queue.max_depth` (not `queue.max.depth`) by knowing the keys the schema has, and the string
 * `"500"` becomes the number 500 only where the schema wants a number.
 *
 * The schema's encoded side (what a file contains) is walked directly, so a key added to
 * `IncomingConfig` is at once reachable from the environment with no second list to update.
 */
import { SchemaAST } from "effect"
import { IncomingConfig } from "./IncomingConfig.ts"

export type Segment = string | number
export type Path = ReadonlyArray<Segment>

/** `listeners[1].tls.cert` */
export const formatPath = (path: Path): string =>
  path.map((s, i) => (typeof s === "number" ? `[${s}]` : i === 0 ? s : `.${s}`)).join("")

export type Tree = Record<string, unknown>

export const isTree = (u: unknown): u is Tree => typeof u === "object" && u !== null && !Array.isArray(u)

export const getAt = (root: unknown, path: Path): unknown => {
  let node = root
  for (const s of path) {
    if (typeof s === "number" ? !Array.isArray(node) : !isTree(node)) return undefined
    node = (node as Record<Segment, unknown>)[s]
  }
  return node
}

/**
 * Sets a value, creating the tables and arrays on the way. An array index may name an existing
 * element or the next one (which appends); anything further would leave a hole, which is an error.
 */
export const setAt = (root: Tree, path: Path, value: unknown): string | undefined => {
  let node: unknown = root
  for (let i = 0; i < path.length; i++) {
    const s = path[i]!
    const last = i === path.length - 1
    const next = path[i + 1]
    if (typeof s === "number") {
      if (!Array.isArray(node)) return `${formatPath(path.slice(0, i))} is not a list`
      if (s > node.length) return `${formatPath(path.slice(0, i))} has ${node.length} element(s); index ${s} would leave a gap`
      if (last) node[s] = value
      else {
        if (node[s] === undefined) node[s] = typeof next === "number" ? [] : {}
        node = node[s]
      }
    } else {
      if (!isTree(node)) return `${formatPath(path.slice(0, i))} is not a table`
      if (last) node[s] = value
      else {
        if (node[s] === undefined) node[s] = typeof next === "number" ? [] : {}
        node = node[s]
      }
    }
  }
  return undefined
}

const encoded = SchemaAST.toEncoded(IncomingConfig.ast)

const elementOf = (ast: SchemaAST.Arrays): SchemaAST.AST | undefined => ast.rest[0] ?? ast.elements[0]

/** The type of key `key` in a table schema: a declared key, else the table's record type if it is one. */
const fieldOf = (node: SchemaAST.AST, key: string): SchemaAST.AST | undefined => {
  if (SchemaAST.isObjects(node)) return node.propertySignatures.find((p) => p.name === key)?.type ?? node.indexSignatures[0]?.type
  // A union of tables (the adapter types, the route schedules): the first member with the key.
  // Members that share a key agree on its type (`port` is a number wherever it appears).
  if (SchemaAST.isUnion(node)) {
    for (const member of node.types) {
      const found = SchemaAST.isObjects(member) ? member.propertySignatures.find((p) => p.name === key)?.type : undefined
      if (found !== undefined) return found
    }
  }
  return undefined
}

/**
 * The encoded schema node at `path`, if the path exists in the schema. Goes through records
 * (`adapters.<name>`) and unions of tables, so `${VAR}` values there are typed as well.
 */
export const astAt = (path: Path): SchemaAST.AST | undefined => {
  let node: SchemaAST.AST | undefined = encoded
  for (const s of path) {
    if (node === undefined) return undefined
    if (typeof s === "number") node = SchemaAST.isArrays(node) ? elementOf(node) : undefined
    else node = fieldOf(node, s)
  }
  return node
}

/** What kind of value the schema wants at a leaf, for turning a string from the environment into it. */
export type LeafKind = "number" | "boolean" | "string" | "list" | "text-or-number"

export const leafKind = (ast: SchemaAST.AST): LeafKind | undefined => {
  if (SchemaAST.isNumber(ast)) return "number"
  if (SchemaAST.isBoolean(ast)) return "boolean"
  if (SchemaAST.isString(ast) || SchemaAST.isLiteral(ast)) return "string"
  if (SchemaAST.isArrays(ast)) {
    const el = elementOf(ast)
    return el !== undefined && leafKind(el) === "string" ? "list" : undefined
  }
  if (SchemaAST.isUnion(ast)) {
    const kinds = new Set(ast.types.map(leafKind))
    if (kinds.size === 1) return [...kinds][0]
    // Durations and sizes: their parsers take "30s" as well as "30000".
    if (kinds.has("string")) return "text-or-number"
  }
  return undefined
}

/** A string from the environment as the value the schema expects (left as text when it does not fit). */
export const coerce = (kind: LeafKind, text: string): unknown => {
  switch (kind) {
    case "number":
      return /^\s*-?\d+(\.\d+)?\s*$/.test(text) ? Number(text) : text
    case "boolean":
      return text === "true" ? true : text === "false" ? false : text
    case "list":
      return text.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
    case "string":
    case "text-or-number":
      return text
  }
}

/**
 * Splits the words of an `INCOMING_*` name (after the prefix, e.g. `["QUEUE","MAX","DEPTH"]`)
 * into a path by matching the schema's keys, longest key first, backtracking when a longer key
 * leads nowhere. A number word indexes a list. The path must end at a leaf or a list of strings.
 */
export const pathOfWords = (words: ReadonlyArray<string>): Path | undefined => {
  const go = (node: SchemaAST.AST, rest: ReadonlyArray<string>): Path | undefined => {
    if (rest.length === 0) return leafKind(node) !== undefined ? [] : undefined
    if (SchemaAST.isArrays(node)) {
      if (!/^\d+$/.test(rest[0]!)) return undefined
      const el = elementOf(node)
      const tail = el === undefined ? undefined : go(el, rest.slice(1))
      return tail === undefined ? undefined : [Number(rest[0]), ...tail]
    }
    if (!SchemaAST.isObjects(node)) return undefined
    const keys = node.propertySignatures
      .map((p) => ({ name: String(p.name), words: String(p.name).toUpperCase().split("_"), type: p.type }))
      .sort((a, b) => b.words.length - a.words.length)
    for (const k of keys) {
      if (k.words.length > rest.length || !k.words.every((w, i) => w === rest[i])) continue
      const tail = go(k.type, rest.slice(k.words.length))
      if (tail !== undefined) return [k.name, ...tail]
    }
    return undefined
  }
  return go(encoded, words)
}

/** Every leaf path of the schema (lists of tables as `[0]`), for documentation and its test. */
export const leafPaths = (): ReadonlyArray<Path> => {
  const out: Array<Path> = []
  const go = (node: SchemaAST.AST, at: Path) => {
    if (leafKind(node) !== undefined) return void out.push(at)
    if (SchemaAST.isArrays(node)) {
      const el = elementOf(node)
      if (el !== undefined) go(el, [...at, 0])
    } else if (SchemaAST.isObjects(node)) {
      for (const p of node.propertySignatures) go(p.type, [...at, String(p.name)])
    }
  }
  go(encoded, [])
  return out
}
