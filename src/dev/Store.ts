/**
 * Where the dev inbox keeps caught mail: `<dataDir>/inbox.db`, a `node:sqlite` database in WAL
 * mode with `synchronous=FULL` (a message the page has shown survives a crash or a reboot),
 * one row per message (the summary as JSON plus folded search columns) and its raw bytes in a
 * table of their own, so listing never reads bodies.
 *
 * Messages are keyed by their queue id, so a delivery repeated after a crash (at-least-once)
 * stores nothing twice. Beyond `maxMessages` the oldest are pruned in the same transaction as
 * the insert. Every change is published as an `InboxEvent` (the page's Server-Sent Events and
 * `wait` listen to them).
 *
 * SQLite calls are synchronous and short (one small transaction per message); a parse of the
 * message, which can take a while for a large one, happens before the transaction.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { DatabaseSync, type SQLInputValue, type SQLOutputValue } from "node:sqlite"
import { Cache, Context, Data, Effect, Exit, Layer, Option, PubSub, type Scope, Stream } from "effect"
import * as Message from "./Message.ts"
import * as Search from "./Search.ts"

export type InboxErrorReason =
  | { readonly _tag: "StorageFailed"; readonly detail: string }

export class InboxError extends Data.TaggedError("InboxError")<{
  readonly reason: InboxErrorReason
  readonly cause?: unknown
}> {
  override get message(): string {
    return `dev inbox storage: ${this.reason.detail}`
  }
}

const storageFailed = (what: string) => (cause: unknown) =>
  new InboxError({ reason: { _tag: "StorageFailed", detail: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` }, cause })

export type InboxEvent =
  | { readonly _tag: "Added"; readonly message: Message.MessageSummary }
  | { readonly _tag: "Updated"; readonly message: Message.MessageSummary }
  | { readonly _tag: "Removed"; readonly ids: ReadonlyArray<string> }
  | { readonly _tag: "Cleared" }

export interface NewMessage {
  readonly id: string
  readonly receivedAt: number
  readonly envelope: Message.EnvelopeInfo
  readonly raw: Uint8Array
}

export interface ListOptions {
  readonly query?: Search.Query | undefined
  /** Only messages received after this instant (epoch ms). */
  readonly since?: number | undefined
  readonly limit?: number | undefined
  readonly offset?: number | undefined
}

export interface ListResult {
  /** Messages matching the query (all of them, not only this page). */
  readonly total: number
  /** Unread messages in the whole inbox. */
  readonly unread: number
  readonly messages: ReadonlyArray<Message.MessageSummary>
}

export interface Parsed {
  readonly summary: Message.MessageSummary
  readonly email: Message.ParsedEmail
}

export class InboxStore extends Context.Service<InboxStore, {
  /** Parses and stores a message; `None` when its id is already stored (a repeated delivery). */
  readonly add: (message: NewMessage) => Effect.Effect<Option.Option<Message.MessageSummary>, InboxError>
  readonly list: (options?: ListOptions) => Effect.Effect<ListResult, InboxError>
  readonly get: (id: string) => Effect.Effect<Option.Option<Message.MessageSummary>, InboxError>
  readonly raw: (id: string) => Effect.Effect<Option.Option<Uint8Array>, InboxError>
  /** The parsed message (a few recent parses are cached: a view asks for its HTML and parts at once). */
  readonly parsed: (id: string) => Effect.Effect<Option.Option<Parsed>, InboxError>
  readonly setUnread: (id: string, unread: boolean) => Effect.Effect<Option.Option<Message.MessageSummary>, InboxError>
  readonly remove: (id: string) => Effect.Effect<boolean, InboxError>
  /** Deletes every message; answers how many there were. */
  readonly clear: Effect.Effect<number, InboxError>
  /** Changes from the moment the stream runs. */
  readonly events: Stream.Stream<InboxEvent>
  /** A subscription to changes, for callers that must not miss one between a look and a wait. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<InboxEvent>, never, Scope.Scope>
  /** Whether the stored message `id` matches `query`. */
  readonly matches: (id: string, query: Search.Query) => Effect.Effect<boolean, InboxError>
  /**
   * The newest message matching `query` (received after `since`, when given), waiting up to
   * `timeoutMs` for one to arrive; `None` when none did.
   */
  readonly wait: (
    query: Search.Query,
    options: { readonly timeoutMs: number; readonly since?: number | undefined }
  ) => Effect.Effect<Option.Option<Message.MessageSummary>, InboxError>
  readonly maxMessages: number
}>()("incoming/dev/InboxStore") {}

export interface StoreOptions {
  /** Directory of `inbox.db`; created if missing. */
  readonly dataDir: string
  /** Oldest messages beyond this many are deleted (default 500). */
  readonly maxMessages?: number | undefined
}

export const defaultMaxMessages = 500

const schema = `
  CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    received_at INTEGER NOT NULL,
    unread INTEGER NOT NULL DEFAULT 1,
    attachments INTEGER NOT NULL,
    summary TEXT NOT NULL,
    s_from TEXT NOT NULL,
    s_to TEXT NOT NULL,
    s_subject TEXT NOT NULL,
    s_text TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS bodies (
    id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    raw BLOB NOT NULL
  );
  CREATE INDEX IF NOT EXISTS messages_received ON messages(received_at);
`

type Row = Record<string, SQLOutputValue>

const summaryOf = (row: Row): Message.MessageSummary => ({
  ...(JSON.parse(String(row["summary"])) as Omit<Message.MessageSummary, "unread">),
  unread: row["unread"] === 1
})

const summaryColumns = "id, unread, summary"

export const make = Effect.fnUntraced(function*(options: StoreOptions) {
  const maxMessages = Math.max(1, options.maxMessages ?? defaultMaxMessages)
  const path = join(options.dataDir, "inbox.db")
  const db = yield* Effect.acquireRelease(
    Effect.try({
      try: () => {
        mkdirSync(options.dataDir, { recursive: true, mode: 0o700 })
        const db = new DatabaseSync(path)
        db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000")
        db.exec(schema)
        return db
      },
      catch: storageFailed(`open ${path}`)
    }),
    (db) => Effect.sync(() => db.close())
  )
  const events = yield* PubSub.sliding<InboxEvent>(4096)
  yield* Effect.addFinalizer(() => PubSub.shutdown(events))

  const sql = (what: string) => <A>(f: () => A): Effect.Effect<A, InboxError> => Effect.try({ try: f, catch: storageFailed(what) })
  const statements = {
    insert: db.prepare(
      `INSERT OR IGNORE INTO messages (id, received_at, attachments, summary, s_from, s_to, s_subject, s_text)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
    ),
    insertBody: db.prepare("INSERT OR IGNORE INTO bodies (id, raw) VALUES (?, ?)"),
    overflow: db.prepare("SELECT id FROM messages ORDER BY seq DESC LIMIT -1 OFFSET ?"),
    deleteOne: db.prepare("DELETE FROM messages WHERE id = ?"),
    getOne: db.prepare(`SELECT ${summaryColumns} FROM messages WHERE id = ?`),
    rawOne: db.prepare("SELECT raw FROM bodies WHERE id = ?"),
    setUnread: db.prepare("UPDATE messages SET unread = ? WHERE id = ?"),
    unreadCount: db.prepare("SELECT count(*) AS n FROM messages WHERE unread = 1"),
    clear: db.prepare("DELETE FROM messages")
  }

  const transaction = <A>(f: () => A): A => {
    db.exec("BEGIN IMMEDIATE")
    try {
      const result = f()
      db.exec("COMMIT")
      return result
    } catch (cause) {
      if (db.isTransaction) db.exec("ROLLBACK")
      throw cause
    }
  }

  const publish = (event: InboxEvent) => PubSub.publish(events, event)

  const get = (id: string) =>
    sql("read a message")(() => {
      const row = statements.getOne.get(id)
      return row === undefined ? Option.none() : Option.some(summaryOf(row))
    })

  const raw = (id: string) =>
    sql("read a message's source")(() => {
      const row = statements.rawOne.get(id)
      const bytes = row?.["raw"]
      return bytes instanceof Uint8Array ? Option.some(bytes) : Option.none()
    })

  // Parsing a large message takes a while; the view asks for its JSON, HTML and parts together.
  const parses = yield* Cache.makeWith(
    (id: string) =>
      Effect.gen(function*() {
        const [summary, bytes] = yield* Effect.all([get(id), raw(id)])
        if (Option.isNone(summary) || Option.isNone(bytes)) return Option.none<Parsed>()
        return Option.some({ summary: summary.value, email: yield* Message.parse(bytes.value) })
      }),
    { capacity: 4, timeToLive: (exit) => (Exit.isSuccess(exit) && Option.isSome(exit.value) ? "2 minutes" : 0) }
  )

  const add = Effect.fn("InboxStore.add")(function*(message: NewMessage) {
    const email = yield* Message.parse(message.raw)
    const indexed = Message.index({ ...message, size: message.raw.byteLength }, email)
    const outcome = yield* sql("store a message")(() =>
      transaction(() => {
        const s = indexed.search
        const inserted = statements.insert.run(
          message.id,
          message.receivedAt,
          indexed.summary.attachmentCount,
          JSON.stringify(indexed.summary),
          s.from,
          s.to,
          s.subject,
          s.text
        )
        if (inserted.changes === 0) return { added: false, pruned: [] as Array<string> }
        statements.insertBody.run(message.id, message.raw)
        const pruned = statements.overflow.all(maxMessages).map((r) => String(r["id"]))
        for (const id of pruned) statements.deleteOne.run(id)
        return { added: true, pruned }
      })
    )
    if (!outcome.added) return Option.none()
    const summary: Message.MessageSummary = { ...indexed.summary, unread: true }
    // New mail is what gets opened next (the page, a test's `wait`): keep this parse.
    yield* Cache.set(parses, message.id, Option.some({ summary, email }))
    if (outcome.pruned.length > 0) {
      yield* Effect.forEach(outcome.pruned, (id) => Cache.invalidate(parses, id), { discard: true })
      yield* publish({ _tag: "Removed", ids: outcome.pruned })
    }
    yield* publish({ _tag: "Added", message: summary })
    return Option.some(summary)
  })

  const list = (options: ListOptions = {}) =>
    sql("list messages")(() => {
      const condition = Search.toSql(options.query ?? [])
      const since = options.since === undefined ? "" : " AND received_at > ?"
      const params: Array<SQLInputValue> = [...condition.params, ...(options.since === undefined ? [] : [options.since])]
      const where = `WHERE (${condition.where})${since}`
      const total = Number(db.prepare(`SELECT count(*) AS n FROM messages ${where}`).get(...params)?.["n"] ?? 0)
      const rows = db.prepare(`SELECT ${summaryColumns} FROM messages ${where} ORDER BY seq DESC LIMIT ? OFFSET ?`)
        .all(...params, options.limit ?? 50, options.offset ?? 0)
      const unread = Number(statements.unreadCount.get()?.["n"] ?? 0)
      return { total, unread, messages: rows.map(summaryOf) } satisfies ListResult
    })

  const matches = (id: string, query: Search.Query) =>
    sql("match a message")(() => {
      const condition = Search.toSql(query)
      return db.prepare(`SELECT 1 FROM messages WHERE id = ? AND (${condition.where})`).get(id, ...condition.params) !== undefined
    })

  const parsed = (id: string) =>
    Effect.gen(function*() {
      const cached = yield* Cache.get(parses, id)
      if (Option.isNone(cached)) return cached
      // The unread flag changes without a new parse: answer the current one.
      const current = yield* get(id)
      return Option.map(current, (summary): Parsed => ({ summary, email: cached.value.email }))
    })

  const setUnread = (id: string, unread: boolean) =>
    Effect.gen(function*() {
      const changed = yield* sql("mark a message")(() => statements.setUnread.run(unread ? 1 : 0, id).changes)
      const summary = yield* get(id)
      if (changed > 0 && Option.isSome(summary)) yield* publish({ _tag: "Updated", message: summary.value })
      return summary
    })

  const remove = (id: string) =>
    Effect.gen(function*() {
      const deleted = yield* sql("delete a message")(() => statements.deleteOne.run(id).changes > 0)
      yield* Cache.invalidate(parses, id)
      if (deleted) yield* publish({ _tag: "Removed", ids: [id] })
      return deleted
    })

  const clear = Effect.gen(function*() {
    const n = yield* sql("delete all messages")(() => Number(statements.clear.run().changes))
    yield* Cache.invalidateAll(parses)
    yield* publish({ _tag: "Cleared" })
    return n
  })

  const subscribe = PubSub.subscribe(events)

  const wait = (query: Search.Query, options: { readonly timeoutMs: number; readonly since?: number | undefined }) =>
    Effect.scoped(Effect.gen(function*() {
      // Subscribe before looking, so a message stored in between is seen by one or the other.
      const subscription = yield* subscribe
      const found = yield* list({ query, since: options.since, limit: 1 })
      if (found.messages[0] !== undefined) return Option.some(found.messages[0])
      const next: Effect.Effect<Message.MessageSummary, InboxError> = Effect.gen(function*() {
        while (true) {
          const event = yield* PubSub.take(subscription)
          if (event._tag === "Added" && (yield* matches(event.message.id, query))) return event.message
        }
      })
      return yield* next.pipe(Effect.timeoutOption(options.timeoutMs))
    }))

  return InboxStore.of({
    add,
    list,
    get,
    raw,
    parsed,
    setUnread,
    remove,
    clear,
    events: Stream.fromPubSub(events),
    subscribe,
    matches,
    wait,
    maxMessages
  })
})

export const layer = (options: StoreOptions): Layer.Layer<InboxStore, InboxError> => Layer.effect(InboxStore, make(options))
