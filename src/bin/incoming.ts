#!/usr/bin/env -S node --expose-gc
/**
 * The `incoming` command. SIGTERM/SIGINT interrupt the main fiber, which drains the server;
 * a clean drain exits 0 (systemd and Kubernetes read anything else as a failure).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Effect, Exit } from "effect"
import { Command } from "effect/cli"
import { serve } from "../cli/serve.ts"

const incoming = Command.make("incoming").pipe(
  Command.withDescription("Incoming: an inbound SMTP server runtime"),
  Command.withSubcommands([serve])
)

incoming.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
  })
)
