/**
 * Run by test/delivery/smtpRelay.test.ts in a process of its own, started with
 * `NODE_EXTRA_CA_CERTS` (which Node reads only at start-up): relays one message over required
 * STARTTLS to each port it is given, with `tls.ca` set to the file it is given, and prints the
 * outcomes as one JSON line. A peer trusted only through Node's default set must still verify
 * when the adapter was given an extra CA.
 *
 *   node relayCaChild.ts CA_FILE PORT...
 */
import { readFileSync } from "node:fs"
import { Effect } from "effect"
import * as DA from "../../src/delivery/DeliveryAdapter.ts"
import * as SmtpRelayAdapter from "../../src/delivery/SmtpRelayAdapter.ts"
import * as BodyStream from "../../src/queue/internal/bodyStream.ts"
import { envelope } from "./fixtures.ts"

const [caFile, ...ports] = process.argv.slice(2)
const text = "From: sender@remote.test\r\nSubject: ca\r\n\r\nbody\r\n"
const delivery: DA.Delivery = {
  id: "01RELAYCATEST001",
  envelope: envelope(["ok@x.test"]),
  receivedAt: 0,
  recipients: [{ rcpt: "ok@x.test", attempt: 1 }],
  size: Buffer.byteLength(text),
  body: DA.bodyStream(() => BodyStream.fromParts("", [Buffer.from(text)]))
}

const outcomes = await Effect.runPromise(Effect.forEach(ports, (port) =>
  SmtpRelayAdapter.make({
    host: "127.0.0.1",
    port: Number(port),
    startTls: "required",
    connectTimeoutMs: 5_000,
    tls: { ca: readFileSync(caFile!), servername: "mx.test" }
  }).deliver(delivery).pipe(Effect.map(([o]) => ({ tag: o!._tag, detail: o!._tag === "Ok" ? o!.reply ?? "" : o!.reason })))))
process.stdout.write(JSON.stringify(outcomes) + "\n")
