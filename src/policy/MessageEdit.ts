/**
 * What a DATA-stage rule may do to the message besides deciding: the edits it returns with a
 * `Continue` or `Accept` verdict (`Verdict.continueWith(edits)`), applied by the session before
 * the message is queued, in rule order.
 *
 * - Header edits: `PrependHeader` (on top of the message, above our `Received:`), `AppendHeader`
 *   (end of the header block), `InsertHeader` (at an index of the header block as received),
 *   `ChangeHeader` / `RemoveHeader` (the n-th field of a name, or every one; `RemoveHeader` can
 *   be limited to `Authentication-Results` fields claiming an authserv-id). These are the milter
 *   header operations (addheader, insheader, chgheader) and what rspamd asks for.
 * - `AuthResults`: typed results; the session writes all rules' results as one
 *   `Authentication-Results:` header with our host name as authserv-id (removing any field in the
 *   message that already claims it, RFC 8601 5) and stores them in `Envelope.authentication`.
 * - `Quarantine`: marks the message (`Envelope.quarantine`); routes can send it elsewhere. With
 *   `hold` (a milter's quarantine) the message is also committed on hold in the queue
 *   (`NewMessage.held`): delivered only once an operator releases it.
 * - `Annotate`: a JSON value under a key in `Envelope.annotations`, for host apps and webhooks.
 * - `Discard`: accept the message and deliver it nowhere (a milter's discard); the session
 *   answers 250 as usual, stores nothing, and records a `MessageDiscarded` event.
 * - `ReplaceBody`: a new body (what follows the header block), already spooled through
 *   `DataContext.newBody` (bounded memory, the message size cap); the last one wins. The header
 *   block, with the header edits applied, is kept on top of it.
 * - Envelope edits, applied in order: `AddRecipient` (through the same recipient-authority check
 *   as RCPT: no edit can make an open relay), `DeleteRecipient`, `ChangeSender`; with RFC 3461
 *   parameters when the rule gave them. A message left without recipients is discarded as by
 *   `Discard` (recorded, 250).
 *
 * A rule in observe mode has its edits recorded in its `PolicyVerdict` event, never applied.
 *
 * Where the edits live: prepended headers join the trace block the queue already prepends on
 * every read (no byte of the body is copied); the other header edits rewrite the header block of
 * the spooled body once, before the commit (in memory: new chunks; spilled: one streaming copy of
 * the file), so every reader — adapters, `queue show`, the webhook — sees the same bytes without
 * a filter to keep in step on each read path. Typed results and marks go into the `Envelope`,
 * which every queue backend stores as JSON.
 *
 * A replacement body is combined with the (edited) header block by the same rewrite step, into
 * one new spooled body; envelope edits are resolved by the session, which owns the recipient
 * authority (smtp/internal/editedEnvelope.ts). Each new variant is a compile error in `plan`
 * until it is handled.
 */
import type * as Dsn from "../protocol/Dsn.ts"
import type { Json, Quarantine } from "../protocol/Envelope.ts"
import type { SpooledBody } from "../spool/SpooledBody.ts"
import { type HeaderEdit, headerLine, type HeaderOp, validName } from "../protocol/HeaderEdit.ts"
import * as AuthenticationResults from "../protocol/AuthenticationResults.ts"

export type { HeaderEdit, HeaderOp } from "../protocol/HeaderEdit.ts"
export { headerLine, headerValue } from "../protocol/HeaderEdit.ts"

export type MessageEdit =
  | HeaderEdit
  | { readonly _tag: "AuthResults"; readonly results: ReadonlyArray<AuthenticationResults.AuthResult> }
  | { readonly _tag: "Quarantine"; readonly reason: string; readonly hold?: boolean | undefined }
  | { readonly _tag: "Annotate"; readonly key: string; readonly value: Json }
  | { readonly _tag: "Discard"; readonly reason: string }
  | { readonly _tag: "ReplaceBody"; readonly body: SpooledBody }
  | EnvelopeEdit

/** A change of the envelope; addresses as the rule wrote them (the session canonicalises them). */
export type EnvelopeEdit =
  | { readonly _tag: "AddRecipient"; readonly recipient: string; readonly dsn?: Dsn.RecipientDsn | undefined }
  | { readonly _tag: "DeleteRecipient"; readonly recipient: string }
  /** The new reverse path ("" for `<>`); `dsn`, when given, replaces the client's RET/ENVID. */
  | { readonly _tag: "ChangeSender"; readonly sender: string; readonly dsn?: Dsn.MailDsn | undefined }

/** An edit and the rule that made it. */
export interface RuleEdit {
  readonly rule: string
  readonly edit: MessageEdit
}

export const prependHeader = (name: string, value: string): MessageEdit => ({ _tag: "PrependHeader", name, value })
export const appendHeader = (name: string, value: string): MessageEdit => ({ _tag: "AppendHeader", name, value })
export const insertHeader = (index: number, name: string, value: string): MessageEdit => ({ _tag: "InsertHeader", index, name, value })
export const changeHeader = (name: string, occurrence: number, value: string): MessageEdit => ({ _tag: "ChangeHeader", name, occurrence, value })
export const removeHeader = (name: string, options: { readonly occurrence?: number; readonly authservId?: string } = {}): MessageEdit => ({
  _tag: "RemoveHeader",
  name,
  ...options
})
export const authResults = (results: ReadonlyArray<AuthenticationResults.AuthResult>): MessageEdit => ({ _tag: "AuthResults", results })
export const quarantine = (reason: string, options: { readonly hold?: boolean } = {}): MessageEdit =>
  options.hold === true ? { _tag: "Quarantine", reason, hold: true } : { _tag: "Quarantine", reason }
export const annotate = (key: string, value: Json): MessageEdit => ({ _tag: "Annotate", key, value })
export const discard = (reason: string): MessageEdit => ({ _tag: "Discard", reason })
export const replaceBody = (body: SpooledBody): MessageEdit => ({ _tag: "ReplaceBody", body })
export const addRecipient = (recipient: string, dsn?: Dsn.RecipientDsn): MessageEdit =>
  dsn === undefined ? { _tag: "AddRecipient", recipient } : { _tag: "AddRecipient", recipient, dsn }
export const deleteRecipient = (recipient: string): MessageEdit => ({ _tag: "DeleteRecipient", recipient })
export const changeSender = (sender: string, dsn?: Dsn.MailDsn): MessageEdit =>
  dsn === undefined ? { _tag: "ChangeSender", sender } : { _tag: "ChangeSender", sender, dsn }

/** What the session does with the edits of one message. */
export interface Plan {
  /** Header lines to put on top, above the trace header, in the order they come (CRLF-terminated). */
  readonly prepend: string
  /** Rewrites of the header block as received, in order; empty in the common case (no copy). */
  readonly headerOps: ReadonlyArray<HeaderOp>
  readonly authentication: AuthenticationResults.Authentication | undefined
  readonly quarantine: Quarantine | undefined
  readonly annotations: Readonly<Record<string, Json>> | undefined
  /** The first rule that discarded the message, and why: nothing is stored. */
  readonly discard: { readonly rule: string; readonly reason: string } | undefined
  /** The first rule that quarantined with `hold`, and why: the message is committed held. */
  readonly hold: { readonly rule: string; readonly reason: string } | undefined
  /** The new body after the header block (the last `ReplaceBody`); absent: the body as received. */
  readonly body: SpooledBody | undefined
  /** Envelope edits in order, each with its rule. */
  readonly envelope: ReadonlyArray<{ readonly rule: string; readonly edit: EnvelopeEdit }>
}

/**
 * Folds the edits of the enforced rules, in order, into a plan. A header edit with an invalid
 * name is dropped (a rule's bug must not corrupt a message). When any rule gave results, the
 * `Authentication-Results` field is written first on top (RFC 8601 5: above the other trace
 * fields) and any field in the message already claiming `authservId` is removed.
 */
export const plan = (edits: ReadonlyArray<RuleEdit>, authservId: string): Plan => {
  const prepends: Array<string> = []
  const headerOps: Array<HeaderOp> = []
  const results: Array<AuthenticationResults.AuthResult> = []
  let sawResults = false
  let quarantined: Quarantine | undefined
  let annotations: Record<string, Json> | undefined
  let discard: Plan["discard"]
  let hold: Plan["hold"]
  let body: SpooledBody | undefined
  const envelope: Array<{ readonly rule: string; readonly edit: EnvelopeEdit }> = []
  for (const { edit, rule } of edits) {
    switch (edit._tag) {
      case "PrependHeader":
        if (validName(edit.name)) prepends.push(headerLine(edit.name, edit.value))
        break
      case "AppendHeader":
      case "InsertHeader":
      case "ChangeHeader":
      case "RemoveHeader":
        if (validName(edit.name)) headerOps.push(edit)
        break
      case "AuthResults":
        sawResults = true
        results.push(...edit.results)
        break
      case "Quarantine":
        quarantined ??= { rule, reason: edit.reason }
        if (edit.hold === true) hold ??= { rule, reason: edit.reason }
        break
      case "Annotate":
        annotations = { ...annotations, [edit.key]: edit.value }
        break
      case "Discard":
        discard ??= { rule, reason: edit.reason }
        break
      case "ReplaceBody":
        body = edit.body
        break
      case "AddRecipient":
      case "DeleteRecipient":
      case "ChangeSender":
        envelope.push({ rule, edit })
        break
    }
  }
  const authentication = sawResults ? { authservId, results } : undefined
  if (authentication !== undefined) {
    headerOps.unshift({ _tag: "RemoveHeader", name: AuthenticationResults.headerName, authservId })
  }
  return {
    prepend: (authentication === undefined ? "" : AuthenticationResults.format(authentication)) + prepends.join(""),
    headerOps,
    authentication,
    quarantine: quarantined,
    annotations,
    discard,
    hold,
    body,
    envelope
  }
}
