/**
 * Settings that work, but not as their author likely meant: `Load.ts` returns them beside the
 * decoded configuration, `incoming check-config` prints them and `serve` logs them.
 */
import type { ConfigIssue } from "./ConfigError.ts"
import type { IncomingConfig } from "./IncomingConfig.ts"
import { deliversOffSite } from "./Options.ts"
import { formatPath, type Path } from "./Shape.ts"

/**
 * Clients allowed to relay (AUTH, trusted networks) with nowhere to relay to: their mail for other
 * domains is refused at RCPT (550 5.7.1), never filed locally. A warning, not an error: AUTH and
 * trusted networks also serve local submission (a submission port for mail between local
 * mailboxes), which works as configured.
 */
export const relayWarnings = (config: IncomingConfig, sourceOf: (path: Path) => string): Array<ConfigIssue> => {
  const path: Path | undefined = config.auth !== undefined ? ["auth"] : config.relay.trusted_networks.length > 0 ? ["relay", "trusted_networks"] : undefined
  if (path === undefined) return []
  const adapters = config.adapters ?? {}
  const offSite = (config.routes ?? []).some((r) => {
    const a = adapters[r.adapter]
    return a !== undefined && deliversOffSite[a.type]
  })
  if (offSite) return []
  const types = Object.entries(deliversOffSite).filter(([, yes]) => yes).map(([t]) => `"${t}"`).join(" or ")
  return [{
    source: sourceOf(path),
    path: formatPath(path),
    message: `clients may relay (AUTH or relay.trusted_networks) but no route delivers off-site (an adapter of type ${types}): ` +
      "their mail for other domains will be refused with 550 5.7.1"
  }]
}
