#!/usr/bin/env node
/**
 * The `incoming` command. SIGTERM/SIGINT interrupt the main fiber, which drains the server;
 * a clean drain exits 0 (systemd and Kubernetes read anything else as a failure). A command
 * that fails says why on one line of stderr and exits 1.
 *
 * Installed, this runs as dist/bin/incoming.js on a plain `node` (no flags, no type stripping);
 * from a clone, `npm start` and `npm run incoming` run src/bin/incoming.ts on the pinned Node 24.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Console, Effect, Exit } from "effect"
import { CliError, Command } from "effect/cli"
import { cert } from "../cli/cert.ts"
import { checkConfig } from "../cli/checkConfig.ts"
import { dev } from "../cli/dev.ts"
import { queue } from "../cli/queue.ts"
import { users } from "../cli/users.ts"
import { serve } from "../cli/serve.ts"
import { isConfigError } from "../config/ConfigError.ts"
import * as Reclaim from "../internal/reclaim.ts"

// What `--expose-gc` used to give from the shebang: large bodies hand their buffers back early.
Reclaim.enable()

const incoming = Command.make("incoming").pipe(
  Command.withDescription("Incoming: an inbound SMTP server runtime"),
  Command.withSubcommands([serve, dev, checkConfig, queue, users, cert])
)

incoming.pipe(
  Command.run({ version: "0.1.0" }),
  // A user error (an unknown id, a missing argument) is one line on stderr, not a stack trace;
  // anything else is reported in full. Interruption (SIGTERM) is a normal stop.
  Effect.tapCause((cause) => {
    if (Cause.hasInterruptsOnly(cause)) return Effect.void
    const failure = cause.reasons.find(Cause.isFailReason)
    // The CLI already printed usage and the problem for its own errors.
    if (failure !== undefined && CliError.isCliError(failure.error)) return Effect.void
    // A bad config is one line per problem, each naming its source and field.
    if (failure !== undefined && isConfigError(failure.error)) return Console.error(failure.error.message)
    // Every other expected failure (an unknown id, the data dir in use or read-only, a port taken,
    // the queue not opening) says in its message what is wrong: one line, no stack trace. Only a
    // defect, our bug, is reported in full.
    if (failure !== undefined) {
      return Console.error(`incoming: ${failure.error instanceof Error ? failure.error.message : String(failure.error)}`)
    }
    return Console.error(Cause.pretty(cause))
  }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
  })
)
