/**
 * Who the anti-spam rules leave alone: our own users. An authenticated session (AUTH) and a
 * client in the relay's trusted networks are not strangers whose reputation we need to look up,
 * so `dnsbl`, `greylist` and `rspamd` skip them unless told to check them too
 * (`check_authenticated` / `check_trusted`), as the email-authentication rules do.
 */
import type { ConnectContext } from "../../Policy.ts"

export interface ExemptionOptions {
  /** Check AUTH sessions too (default false: they are our users). */
  readonly checkAuthenticated?: boolean | undefined
  /** Check clients in the trusted networks too (default false). */
  readonly checkTrusted?: boolean | undefined
}

/** True when the rule should let `ctx` through without looking. */
export const exempt = (options: ExemptionOptions, ctx: ConnectContext & { readonly user?: string | undefined }): boolean =>
  (options.checkAuthenticated !== true && ctx.user !== undefined) ||
  (options.checkTrusted !== true && ctx.trusted === true)
