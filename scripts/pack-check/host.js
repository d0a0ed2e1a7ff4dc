// A host app as its author writes it in plain JavaScript, run by `npm run test:pack` from a fresh
// app that installed the packed tarball: Incoming.layer with the default (durable SQLite) queue
// under the data directory given as argv[2], delivering to an Effect function; a real SMTP client
// (nodemailer) sends one message and the body the function received is checked.
import { existsSync } from "node:fs"
import { join } from "node:path"
import { Context, Deferred, Effect, Layer, Stream } from "effect"
import { Adapters, Incoming, Listener } from "incoming-smtp"
import nodemailer from "nodemailer"

const dataDir = process.argv[2]
if (dataDir === undefined) throw new Error("usage: node host.js DATA_DIR")
const marker = `packed host app ${process.pid}`

const program = Effect.gen(function*() {
  const delivered = yield* Deferred.make()
  const deliver = Adapters.Effect.layer("host", (delivery) =>
    Effect.gen(function*() {
      const body = yield* delivery.body.pipe(Stream.decodeText(), Stream.mkString)
      yield* Deferred.succeed(delivered, { rcpts: delivery.recipients.map((r) => r.rcpt), body })
    }))
  const server = Incoming.layer({
    domains: ["example.test"],
    listeners: [{ host: "127.0.0.1", port: 0 }],
    dataDir
  }).pipe(Layer.provide(deliver))
  const context = yield* Layer.build(server)
  const port = Context.get(context, Listener.Listeners).all[0].port

  const transport = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true })
  const info = yield* Effect.promise(() =>
    transport.sendMail({ from: "sender@remote.test", to: "user@example.test", subject: "pack check", text: marker })
  )
  const got = yield* Deferred.await(delivered).pipe(Effect.timeout("15 seconds"))
  if (!/^250 /.test(info.response)) throw new Error(`unexpected reply: ${info.response}`)
  if (got.rcpts.join() !== "user@example.test") throw new Error(`delivered to ${got.rcpts.join()}`)
  if (!got.body.includes(marker)) throw new Error(`the delivered body lacks the text sent:\n${got.body}`)
  if (!existsSync(join(dataDir, "queue.db"))) throw new Error(`no SQLite queue at ${join(dataDir, "queue.db")}`)
  console.log(`host.js: ${info.response}; delivered to ${got.rcpts.join()} with the body sent; queue at ${join(dataDir, "queue.db")}`)
})

// Closing the scope drains the server; a failure exits 1.
Effect.runPromise(Effect.scoped(program)).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
