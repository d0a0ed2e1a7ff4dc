/**
 * The delivery layer of `incoming serve`, from the runner's `DeliveryChoice`: a Maildir or
 * discard adapter for the simple form, or the Router over the file's named adapters for the
 * routed form. The Router also provides `Router.Routes`, which sessions read to acknowledge
 * `acknowledge = "sync"` routes before answering DATA.
 */
import type { Effect, Layer, Scope } from "effect"
import type * as DA from "../delivery/DeliveryAdapter.ts"
import * as DiscardAdapter from "../delivery/DiscardAdapter.ts"
import * as LmtpAdapter from "../delivery/LmtpAdapter.ts"
import * as MaildirAdapter from "../delivery/MaildirAdapter.ts"
import * as Router from "../delivery/Router.ts"
import * as SmtpRelayAdapter from "../delivery/SmtpRelayAdapter.ts"
import * as WebhookAdapter from "../delivery/WebhookAdapter.ts"
import type { AdapterChoice, DeliveryChoice } from "../config/Options.ts"

/** An adapter, or the Effect that builds it (the webhook's owns sockets, so it needs a Scope). */
type Input = DA.DeliveryAdapter["Service"] | Effect.Effect<DA.DeliveryAdapter["Service"], never, Scope.Scope>

const adapterInput = (a: AdapterChoice): Input => {
  switch (a.type) {
    case "maildir":
      return MaildirAdapter.make({ root: a.root })
    case "discard":
      return DiscardAdapter.make
    case "webhook":
      // Needs a Scope (its keep-alive agents): the Router builds it in its layer's scope.
      return WebhookAdapter.make(a.options)
    case "lmtp":
      return LmtpAdapter.make(a.options)
    case "smtp":
      return SmtpRelayAdapter.make(a.options)
  }
}

/**
 * Fails with a `RouterError` only for a table `Load.ts` should already have refused (the same
 * checks run there first, with paths into the file).
 */
export const layer = (
  choice: DeliveryChoice
): Layer.Layer<DA.DeliveryAdapter> | Layer.Layer<DA.DeliveryAdapter | Router.Routes, Router.RouterError> => {
  switch (choice.adapter) {
    case "maildir":
      return MaildirAdapter.layer({ root: choice.root })
    case "discard":
      return DiscardAdapter.layer
    case "router": {
      const adapters: Record<string, Input> = {}
      for (const [name, a] of Object.entries(choice.adapters)) adapters[name] = adapterInput(a)
      return Router.layer({ adapters, routes: choice.routes, unrouted: choice.unrouted })
    }
  }
}

/** How the start-up log line describes delivery. */
export const describe = (choice: DeliveryChoice): string => {
  switch (choice.adapter) {
    case "maildir":
      return `maildir into ${choice.root}`
    case "discard":
      return "discard"
    case "router":
      return `router: ${choice.routes.map((r) => `${r.name} (${r.match.join(", ")}) → ${r.adapter}`).join("; ")}`
  }
}
