/**
 * `incoming queue ...`: inspect and repair the durable queue of a data directory, while the
 * server runs or not. Tables for people, `--json` for scripts. Exit code 1 when the id named is
 * not in the queue.
 */
import { Console, Effect, Option, Result } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import type { Envelope } from "../protocol/Envelope.ts"
import * as Priority from "../protocol/Priority.ts"
import * as BodyStream from "../queue/internal/bodyStream.ts"
import type { MessageInfo, MessageState } from "../queue/QueueAdmin.ts"
import { config, dataDir, withQueue } from "./queueSource.ts"

const json = Flag.Boolean("json").pipe(Flag.withDescription("machine-readable output"), Flag.withDefault(false))

class NotFound extends Error {}
class BadLevel extends Error {}

const priorityOf = (e: Envelope) => Priority.format(e.priority ?? Priority.normal)

const iso = (ms: number | undefined) => (ms === undefined || ms === 0 ? "-" : new Date(ms).toISOString().replace(".000", ""))

const table = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n")
}

const summary = (m: MessageInfo) => {
  const pending = m.recipients.filter((r) => r.state !== "delivered")
  const next = Math.min(...pending.map((r) => r.nextAttemptAt))
  const last = m.recipients.map((r) => r.lastReply).filter((r) => r !== undefined).at(-1)
  return [m.id, m.state, priorityOf(m.envelope), String(m.size), m.envelope.mailFrom || "<>", m.recipients.map((r) => r.rcpt).join(","),
    String(Math.max(0, ...m.recipients.map((r) => r.attempts))), m.state === "retry" ? iso(next) : "-", last ?? "-"]
}

const list = Command.make("list", {
  dataDir,
  config,
  json,
  state: Flag.Literals("state", ["queued", "inflight", "held", "retry", "dead", "all"]).pipe(
    Flag.withDescription("which messages"),
    Flag.withDefault("all" as const)
  ),
  limit: Flag.Int("limit").pipe(Flag.withDefault(1000))
}, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      const messages = yield* q.list({ state: f.state as MessageState | "all", limit: f.limit })
      if (f.json) return yield* Console.log(JSON.stringify(messages, null, 2))
      if (messages.length === 0) return yield* Console.log(`no ${f.state === "all" ? "" : `${f.state} `}messages`)
      yield* Console.log(table([["ID", "STATE", "PRIORITY", "SIZE", "FROM", "TO", "ATTEMPTS", "NEXT", "LAST REPLY"], ...messages.map(summary)]))
    }))).pipe(Command.withDescription("list queued, retrying and dead messages"))

/** SMTPUTF8 and the RFC 3461 parameters, one line each, only when the client gave them. */
const extensionLines = (e: Envelope): Array<string> => {
  const lines: Array<string> = []
  if (e.smtpUtf8 === true) lines.push("smtputf8:    yes")
  if (e.dsn !== undefined) lines.push(`dsn:         ${[e.dsn.ret && `RET=${e.dsn.ret}`, e.dsn.envid !== undefined && `ENVID=${e.dsn.envid}`].filter(Boolean).join(" ")}`)
  for (const [rcpt, d] of Object.entries(e.recipientDsn ?? {})) {
    const parts = [d.notify && `NOTIFY=${d.notify.join(",")}`, d.orcpt && `ORCPT=${d.orcpt.type};${d.orcpt.address}`].filter(Boolean)
    lines.push(`dsn ${rcpt}: ${parts.join(" ")}`)
  }
  return lines
}

const show = Command.make("show", {
  dataDir,
  config,
  json,
  raw: Flag.Boolean("raw").pipe(Flag.withDescription("print the stored message (trace header + body)"), Flag.withDefault(false)),
  id: Argument.String("id")
}, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      const found = yield* q.get(f.id)
      if (Option.isNone(found)) return yield* Effect.fail(new NotFound(`no message ${f.id}`))
      const m = found.value
      if (f.raw) {
        const body = yield* q.readMessage(f.id)
        const bytes = yield* Effect.promise(() => BodyStream.collect(body.stream()))
        return yield* Effect.sync(() => process.stdout.write(bytes))
      }
      if (f.json) return yield* Console.log(JSON.stringify(m, null, 2))
      yield* Console.log([
        `id:          ${m.id}`,
        `state:       ${m.state}${m.held && m.state !== "held" ? " (held)" : ""}`,
        `priority:    ${priorityOf(m.envelope)}`,
        `received:    ${iso(m.receivedAt)} from ${m.envelope.clientAddress} (${m.envelope.helo}) on ${m.envelope.listener}`,
        `size:        ${m.size}`,
        `from:        ${m.envelope.mailFrom || "<>"}`,
        ...extensionLines(m.envelope),
        "",
        table([
          ["RECIPIENT", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "EXPIRES", "LAST REPLY"],
          ...m.recipients.map((r) => [r.rcpt, r.state, String(r.attempts), r.state === "delivered" || r.state === "dead" ? "-" : iso(r.nextAttemptAt), iso(r.expiresAt), r.lastReply ?? "-"])
        ])
      ].join("\n"))
    }))).pipe(Command.withDescription("one message: envelope, recipients, attempts, last replies"))

const retry = Command.make("retry", {
  dataDir,
  config,
  json,
  allDead: Flag.Boolean("all-dead").pipe(Flag.withDescription("retry every dead-lettered message"), Flag.withDefault(false)),
  id: Argument.String("id").pipe(Argument.optional)
}, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      const ids = f.allDead
        ? (yield* q.list({ state: "dead" })).map((m) => m.id)
        : Option.isSome(f.id)
        ? [f.id.value]
        : yield* Effect.fail(new NotFound("give a message id or --all-dead"))
      const retried: Array<string> = []
      for (const id of ids) if (yield* q.retryNow(id)) retried.push(id)
      if (!f.allDead && retried.length === 0) return yield* Effect.fail(new NotFound(`nothing to retry for ${ids[0]}`))
      yield* Console.log(f.json ? JSON.stringify({ retried }) : `${retried.length} message(s) due now`)
    }))).pipe(Command.withDescription("make a retrying or dead message due now"))

const setPriority = Command.make("set-priority", {
  dataDir,
  config,
  json,
  id: Argument.String("id"),
  level: Argument.String("level").pipe(Argument.withDescription("low, normal, high, critical or an integer from -9 to 9"))
}, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      const level = Priority.fromSetting(f.level)
      if (Result.isFailure(level)) return yield* Effect.fail(new BadLevel(`priority: ${level.failure}`))
      if (!(yield* q.setPriority(f.id, level.success))) return yield* Effect.fail(new NotFound(`no message ${f.id}`))
      yield* Console.log(
        f.json
          ? JSON.stringify({ id: f.id, priority: level.success })
          : `${f.id}: priority ${Priority.format(level.success)}`
      )
    }))).pipe(Command.withDescription("change a queued message's priority (claims order by it)"))

const hold = Command.make("hold", { dataDir, config, json, id: Argument.String("id") }, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      if (!(yield* q.hold(f.id))) return yield* Effect.fail(new NotFound(`no pending message ${f.id}`))
      // A delivery already under way is not interrupted: say so rather than let it look stopped.
      const inflight = Option.match(yield* q.get(f.id), {
        onNone: () => 0,
        onSome: (m) => m.recipients.filter((r) => r.state === "inflight").length
      })
      if (f.json) return yield* Console.log(JSON.stringify({ held: f.id, inflight }))
      yield* Console.log(inflight > 0
        ? `held ${f.id}; a delivery under way for ${inflight} recipient(s) completes first`
        : `held ${f.id}`)
    }))).pipe(Command.withDescription("put a message on hold: it is not delivered until released (postsuper -h)"))

const release = Command.make("release", { dataDir, config, json, id: Argument.String("id") }, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      if (!(yield* q.unhold(f.id))) return yield* Effect.fail(new NotFound(`no held message ${f.id}`))
      yield* Console.log(f.json ? JSON.stringify({ released: f.id }) : `released ${f.id}`)
    }))).pipe(Command.withDescription("release a held message: delivered again at its time (postsuper -H)"))

const remove = Command.make("delete", { dataDir, config, json, id: Argument.String("id") }, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      if (!(yield* q.remove(f.id))) return yield* Effect.fail(new NotFound(`no message ${f.id}`))
      yield* Console.log(f.json ? JSON.stringify({ deleted: f.id }) : `deleted ${f.id}`)
    }))).pipe(Command.withDescription("remove a message and its body"))

const purge = Command.make("purge", {
  dataDir,
  config,
  json,
  dead: Flag.Boolean("dead").pipe(Flag.withDescription("remove every dead-lettered recipient now"), Flag.withDefault(false))
}, (f) =>
  withQueue(f, (q) =>
    Effect.gen(function*() {
      if (!f.dead) return yield* Effect.fail(new NotFound("say what to purge: --dead"))
      const n = yield* q.purgeDead
      yield* Console.log(f.json ? JSON.stringify({ purged: n }) : `purged ${n} dead recipient(s)`)
    }))).pipe(Command.withDescription("remove dead letters"))

const stats = Command.make("stats", { dataDir, config, json }, (f) =>
  withQueue(f, (q, opened) =>
    Effect.gen(function*() {
      const s = yield* q.stats
      // A shared queue also says which node holds how many leases (a dead node's run out).
      const leases = Option.isSome(opened.leasesByNode) ? yield* opened.leasesByNode.value : undefined
      if (f.json) return yield* Console.log(JSON.stringify({ backend: q.backend, ...s, ...(leases !== undefined ? { leases } : {}) }))
      yield* Console.log(table([
        ["BACKEND", "MESSAGES", "PENDING", "HELD", "QUEUED", "INFLIGHT", "RETRY", "DELIVERED", "DEAD"],
        [q.backend, String(s.messages), String(s.depth), String(s.held), ...(["queued", "inflight", "retry", "delivered", "dead"] as const).map((k) => String(s.recipients[k]))]
      ]))
      // Only when some pending mail is not at normal priority: the usual queue needs no second table.
      if (s.byPriority.some((p) => p.priority !== Priority.normal)) {
        yield* Console.log(`\n${table([["PRIORITY", "PENDING"], ...s.byPriority.map((p) => [Priority.format(p.priority), String(p.messages)])])}`)
      }
      if (leases === undefined) return
      yield* Console.log(leases.length === 0 ? "\nno leases held" : `\n${table([["NODE", "LEASES", "NEXT EXPIRY"], ...leases.map((l) => [l.node, String(l.leases), iso(l.nextExpiry)])])}`)
    }))).pipe(Command.withDescription("counts by state (recipients) and by priority (pending), and leases per node for a shared queue"))

export const queue = Command.make("queue").pipe(
  Command.withDescription("inspect and repair the durable queue"),
  Command.withSubcommands([list, show, retry, hold, release, setPriority, remove, purge, stats])
)

export const isNotFound = (e: unknown): e is NotFound => e instanceof NotFound
