/**
 * The built-in policy rules, one namespace for all of them: `Rules.SizeLimit.make(…)`,
 * `Rules.Auth.spf(…)`. Each rule is a `Policy` like one a host app writes; this module only
 * gathers them so the package root stays small.
 */
export * as Auth from "./rules/auth/AuthRules.ts"
export * as AuthChecks from "./rules/auth/Checks.ts"
export * as ConnectionLimit from "./rules/ConnectionLimit.ts"
export * as Dnsbl from "./rules/spam/Dnsbl.ts"
export * as Greylist from "./rules/spam/Greylist.ts"
export * as GreylistStore from "./rules/spam/GreylistStore.ts"
export * as Rspamd from "./rules/spam/Rspamd.ts"
export * as Spamd from "./rules/spam/Spamd.ts"
export * as SqliteGreylistStore from "./rules/spam/SqliteGreylistStore.ts"
export * as HelloRequired from "./rules/HelloRequired.ts"
export * as MaxRecipients from "./rules/MaxRecipients.ts"
export * as Milter from "./rules/Milter.ts"
export * as RateLimiter from "./rules/RateLimiter.ts"
export * as SizeLimit from "./rules/SizeLimit.ts"
export * as TlsRequired from "./rules/TlsRequired.ts"
