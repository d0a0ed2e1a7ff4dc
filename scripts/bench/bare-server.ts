/**
 * The "bare" benchmark target: nodemailer's smtp-server with nothing behind it, DATA drained and
 * discarded, configured like Incoming's listener (authOptional, AUTH and STARTTLS disabled, no
 * reverse lookup, no logger). It is the ceiling of our stack: whatever Incoming adds on top of
 * smtp-server shows as the distance to this target in `npm run bench`.
 *
 * It greets at once (reference.ts): smtp-server's own 100 ms pre-greeting delay would cap
 * one-message-per-connection runs at ~10 msgs/s per session and make the ceiling meaningless.
 *
 *   node scripts/bench/bare-server.ts --port 2560     (listens on 127.0.0.1 only)
 *
 * It exits on SIGTERM/SIGINT, and also when its stdin closes, so that it cannot outlive the
 * benchmark script that started it (that script keeps a pipe to its stdin).
 */
import { parseArgs } from "node:util"
import { PromptGreetingServer, referenceOptions, serve } from "./reference.ts"

const { values } = parseArgs({ options: { port: { type: "string" } }, strict: true })
const port = Number(values.port)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write("bare-server: --port PORT is required\n")
  process.exit(2)
}

let accepted = 0
const server = new PromptGreetingServer({
  ...referenceOptions,
  banner: "bare",
  onData(stream, _session, callback) {
    stream.on("data", () => undefined) // drain to nowhere
    stream.on("end", () => {
      accepted++
      callback()
    })
  }
})
serve(server, "bare-server", port, () => accepted)
