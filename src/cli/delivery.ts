/**
 * The delivery layer of `incoming serve`, from the runner's `DeliveryChoice`: a Maildir or
 * discard adapter for the simple form, or the Router over the file's named adapters for the
 * routed form. The Router also provides `Router.Routes`, which sessions read to acknowledge
 * `acknowledge = "sync"` routes before answering DATA.
 *
 * `layerSwappable` makes it reloadable: the services it provides delegate to the current build,
 * and `DeliverySwap.replace` builds the new adapters and routes in a scope of their own, swaps,
 * and then closes the old build's scope (its connections and agents). A delivery in flight on
 * the old build may fail when that happens; it is retried, as after any delivery failure.
 */
import { readFileSync } from "node:fs"
import { Context, Effect, Exit, Layer, Option, Scope } from "effect"
import * as DA from "../delivery/DeliveryAdapter.ts"
import * as DiscardAdapter from "../delivery/DiscardAdapter.ts"
import * as LmtpAdapter from "../delivery/LmtpAdapter.ts"
import * as MaildirAdapter from "../delivery/MaildirAdapter.ts"
import * as MxAdapter from "../delivery/MxAdapter.ts"
import * as Router from "../delivery/Router.ts"
import * as SmtpRelayAdapter from "../delivery/SmtpRelayAdapter.ts"
import * as WebhookAdapter from "../delivery/webhook/WebhookAdapter.ts"
import type { AdapterChoice, DeliveryChoice, DkimKeyFile } from "../config/Options.ts"
import * as DkimSigner from "../delivery/dkim/DkimSigner.ts"
import { Dns } from "../dns/Dns.ts"

/**
 * An adapter, or the Effect that builds it (the webhook's and the MX adapter's own sockets, so
 * they need a Scope; the MX adapter asks the server's `Dns`).
 */
type Input = DA.DeliveryAdapter["Service"] | Effect.Effect<DA.DeliveryAdapter["Service"], never, Scope.Scope | Dns>

const adapterInput = (a: AdapterChoice): Input => {
  switch (a.type) {
    case "maildir":
      // Built as an Effect: it first removes partial files dead deliveries left in tmp/.
      return MaildirAdapter.makeRecovered({ root: a.root })
    case "discard":
      return DiscardAdapter.make
    case "webhook":
      // Needs a Scope (its keep-alive agents): the Router builds it in its layer's scope.
      return WebhookAdapter.make(a.options)
    case "lmtp":
      return LmtpAdapter.make(a.options)
    case "smtp":
      return SmtpRelayAdapter.make(a.options)
    case "mx": {
      // Load.ts checked that these files are readable (and the keys private).
      const key = (k: DkimKeyFile): DkimSigner.DkimKey => ({ domain: k.domain, selector: k.selector, privateKey: readFileSync(k.privateKeyFile, "utf8") })
      const sign = a.dkim === undefined ? undefined : DkimSigner.make({
        ...(a.dkim.key !== undefined ? { key: key(a.dkim.key) } : {}),
        ...(a.dkim.byDomain !== undefined ? { byDomain: Object.fromEntries(Object.entries(a.dkim.byDomain).map(([d, k]) => [d, key(k)])) } : {})
      })
      return MxAdapter.make({
        ...a.options,
        ...(a.tlsCaFile !== undefined ? { tlsCa: readFileSync(a.tlsCaFile) } : {}),
        ...(sign !== undefined ? { prepare: sign } : {})
      })
    }
  }
}

/**
 * Fails with a `RouterError` only for a table `Load.ts` should already have refused (the same
 * checks run there first, with paths into the file).
 */
export const layer = (
  choice: DeliveryChoice
): Layer.Layer<DA.DeliveryAdapter> | Layer.Layer<DA.DeliveryAdapter | Router.Routes, Router.RouterError, Dns> => {
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

/** Replaces the delivery adapters and routes of a running server (SIGHUP). */
export class DeliverySwap extends Context.Service<DeliverySwap, {
  readonly replace: (choice: DeliveryChoice) => Effect.Effect<void, Router.RouterError>
}>()("incoming/cli/DeliverySwap") {}

interface Built {
  readonly adapter: DA.DeliveryAdapter["Service"]
  readonly routes: Router.RouteTable | undefined
}

const build = (choice: DeliveryChoice, scope: Scope.Scope): Effect.Effect<Built, Router.RouterError, Dns> =>
  Effect.map(Layer.buildWithScope(layer(choice) as Layer.Layer<DA.DeliveryAdapter | Router.Routes, Router.RouterError, Dns>, scope), (ctx) => ({
    adapter: Context.get(ctx, DA.DeliveryAdapter),
    routes: Option.getOrUndefined(Context.getOption(ctx, Router.Routes))
  }))

export const layerSwappable = (
  choice: DeliveryChoice
): Layer.Layer<DA.DeliveryAdapter | Router.Routes | DeliverySwap, Router.RouterError, Dns> =>
  Layer.effectContext(Effect.gen(function*() {
    const parent = yield* Effect.scope
    // The server's one Dns, kept for the builds of later reloads.
    const dns = yield* Dns
    let scope = yield* Scope.fork(parent)
    let current = yield* build(choice, scope)
    const adapter = DA.DeliveryAdapter.of({
      get name() {
        return current.adapter.name
      },
      deliver: (delivery) => current.adapter.deliver(delivery),
      deliversOffSite: (rcpt) => current.adapter.deliversOffSite?.(rcpt) === true
    })
    // Without a router every recipient is durable: an empty table answers "no route".
    const routes: Router.RouteTable = {
      get routes() {
        return current.routes?.routes ?? []
      },
      routeFor: (rcpt) => current.routes?.routeFor(rcpt),
      byName: (name) => current.routes?.byName(name)
    }
    const swap = DeliverySwap.of({
      replace: (next) =>
        Effect.gen(function*() {
          const fresh = yield* Scope.fork(parent)
          const built = yield* build(next, fresh).pipe(
            Effect.provideService(Dns, dns),
            Effect.tapError(() => Scope.close(fresh, Exit.void))
          )
          const old = scope
          current = built
          scope = fresh
          yield* Scope.close(old, Exit.void)
        })
    })
    return Context.make(DA.DeliveryAdapter, adapter).pipe(
      Context.add(Router.Routes, Router.Routes.of(routes)),
      Context.add(DeliverySwap, swap)
    )
  }))
