/**
 * How an SMTP/LMTP reply becomes a recipient outcome, shared by the LMTP and relay adapters so
 * they cannot drift apart: 2xx delivered, 5xx permanent (dead-lettered with the reply), and
 * everything else — 4xx, and any reply we did not expect — tried again later.
 */
import * as DA from "../DeliveryAdapter.ts"

export const fromReply = (rcpt: string, code: number, text: string): DA.RecipientOutcome => {
  if (code >= 200 && code < 300) return DA.ok(rcpt, text)
  if (code >= 500 && code < 600) return DA.reject(rcpt, text)
  return DA.retry(rcpt, text)
}

/** Every recipient without an outcome yet gets a retry with `reason` (a connection that broke mid-way). */
export const fillRetry = (
  recipients: ReadonlyArray<{ readonly rcpt: string }>,
  decided: ReadonlyMap<string, DA.RecipientOutcome>,
  reason: string
): ReadonlyArray<DA.RecipientOutcome> => recipients.map(({ rcpt }) => decided.get(rcpt) ?? DA.retry(rcpt, reason))
