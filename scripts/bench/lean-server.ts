/**
 * The "lean" benchmark target (`npm run bench -- --targets bare,lean,sqlite`): how fast the
 * design of Incoming's durable queue can go at all on this machine, with nothing else around it.
 * smtp-server with plain callbacks — no Effect, no policies, no telemetry, no dispatcher — and the
 * same storage contract: the 250 is sent once the message's row has committed with an fsync, in
 * a group commit on a writer thread (lean-writer.ts), one batch in flight. Each message is then
 * "delivered" at once: deleted in the next batch, as Incoming's handoff and settle do.
 *
 * It is a measuring stick, not a server: it accepts any sender, recipients of @bench.test only,
 * and keeps nothing it is not made to keep.
 *
 *   node scripts/bench/lean-server.ts --port 2563 --db DIR/lean.db   (127.0.0.1 only)
 *
 * Like bare-server.ts it exits on SIGTERM/SIGINT and when its stdin closes.
 */
import { randomUUID } from "node:crypto"
import { parseArgs } from "node:util"
import { Worker } from "node:worker_threads"
import type { SMTPServerDataStream, SMTPServerSession } from "smtp-server"
import type { LeanBatch, LeanCommit } from "./lean-writer.ts"
import { PromptGreetingServer, referenceOptions, serve } from "./reference.ts"

const { values } = parseArgs({ options: { port: { type: "string" }, db: { type: "string" } }, strict: true })
const port = Number(values.port)
if (!Number.isInteger(port) || port <= 0 || port > 65535 || values.db === undefined) {
  process.stderr.write("lean-server: --port PORT --db FILE are required\n")
  process.exit(2)
}

interface Waiting {
  readonly commit: LeanCommit
  readonly reply: (err: Error | null, message: string) => void
}

const writer = new Worker(new URL("./lean-writer.ts", import.meta.url), { workerData: values.db })
let pending: Array<Waiting> = []
let deletes: Array<string> = []
let inFlight: Array<Waiting> | undefined
let accepted = 0

const flush = () => {
  if (inFlight !== undefined || (pending.length === 0 && deletes.length === 0)) return
  inFlight = pending
  const batch: LeanBatch = { commits: pending.map((w) => w.commit), deletes }
  pending = []
  deletes = []
  writer.postMessage(batch)
}
writer.on("message", () => {
  const done = inFlight ?? []
  inFlight = undefined
  for (const w of done) {
    accepted++
    w.reply(null, `2.0.0 queued as ${w.commit.id}`)
    deletes.push(w.commit.id)
  }
  flush()
})
writer.on("error", (err) => {
  process.stderr.write(`lean-server: writer thread: ${err.message}\n`)
  process.exit(1)
})

const receive = (stream: SMTPServerDataStream, session: SMTPServerSession, reply: Waiting["reply"]) => {
  const chunks: Array<Buffer> = []
  stream.on("data", (chunk: Buffer) => chunks.push(chunk))
  stream.on("end", () => {
    const id = randomUUID().replaceAll("-", "").slice(0, 16)
    const receivedAt = Date.now()
    const rcpt = session.envelope.rcptTo[0]?.address ?? ""
    const mailFrom = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address
    pending.push({
      commit: {
        id,
        envelope: JSON.stringify({ mailFrom, rcptTo: session.envelope.rcptTo.map((r) => r.address), clientAddress: session.remoteAddress }),
        trace: `Received: from ${session.hostNameAppearsAs} ([${session.remoteAddress}]) by bench.test with ESMTP id ${id}; ${new Date(receivedAt).toUTCString()}\r\n`,
        receivedAt,
        rcpt,
        body: Buffer.concat(chunks)
      },
      reply
    })
    flush()
  })
}

const server = new PromptGreetingServer({
  ...referenceOptions,
  banner: "lean",
  onRcptTo(address, _session, callback) {
    callback(address.address.toLowerCase().endsWith("@bench.test") ? null : new Error("550 5.7.1 Relaying denied"))
  },
  onData(stream, session, callback) {
    receive(stream, session, callback)
  }
})
serve(server, "lean-server", port, () => accepted)
