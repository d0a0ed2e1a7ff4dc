/**
 * `incoming check-config [--config PATH] [--format toml|json|yaml]`: loads the configuration
 * exactly as `serve` would (same file lookup, `${VAR}` references, `INCOMING_*` overrides),
 * validates it, and prints the effective configuration — defaults filled in, secrets shown as
 * `<redacted>` — on stdout. Exit code 0 when valid (warnings, one line each on stderr, do not
 * change that); 1 with one line per problem on stderr when not. Run it before a restart: a
 * config that passes here is one `serve` accepts.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { formatIssue } from "../config/ConfigError.ts"
import * as Load from "../config/Load.ts"
import * as Render from "../config/Render.ts"

export const checkConfig = Command.make("check-config", {
  config: Flag.String("config").pipe(
    Flag.withDescription("config file to check; default ./incoming.toml, then /etc/incoming/incoming.toml if present"),
    Flag.optional
  ),
  format: Flag.Literals("format", ["toml", "json", "yaml"]).pipe(
    Flag.withDescription("how to print the effective configuration"),
    Flag.withDefault("toml" as const)
  )
}, (f) =>
  Effect.gen(function*() {
    const loaded = yield* Load.loadFromProcess({ configPath: Option.getOrUndefined(f.config) })
    // The verdict goes to stderr so that stdout is the configuration alone, fit for a parser.
    for (const w of loaded.warnings) yield* Console.error(`warning: ${formatIssue(w)}`)
    yield* Console.error(loaded.file === undefined ? "no config file found: built-in defaults (valid)" : `${loaded.file}: valid`)
    yield* Effect.sync(() => process.stdout.write(Render.render(loaded.config, f.format)))
  })).pipe(Command.withDescription("validate the configuration and print it with defaults filled in and secrets redacted"))
