import { msUntilExpiry, type Principal } from '../auth/index.ts'
import { matches, type EventSelector } from './event-filter.ts'
import type { EventService } from './event-service.ts'
import type { StoredEvent } from './event-store.ts'

const PAGE = 1000
/** live events arriving during a long replay wait here; past this the subscriber counts as lagged */
const MAX_WAITING = 10_000

export interface EventSubscriptionInit {
  events: EventService
  principal: () => Principal
  selector: EventSelector
  /** replay what arrived after this cursor (an event id or a localId) before going live */
  after?: string
  /** hands over one matching event; returns false when the subscriber cannot take more now */
  deliver: (event: StoredEvent) => boolean
  /** waits until the subscriber can take more (its transport drained) */
  drained: () => Promise<void>
  /** the subscriber fell too far behind: it should be told and dropped */
  onLagged: (lastLocalId: number) => void
}

/**
 * One subscriber's view of a namespace's events: first the events after its cursor, page by page
 * at the pace its transport drains, then live ones, with no gap and no duplicate between the two
 * (live events that arrive during the replay wait, then go out in order). Shared by SSE and
 * WebSocket channels.
 */
export class EventSubscription {
  private readonly init: EventSubscriptionInit
  private lastSeen = 0
  private waiting: StoredEvent[] | null = []
  private stopped = false
  private readonly onStored = (event: StoredEvent): void => {
    if (this.stopped || event.namespace !== this.init.selector.namespace) return
    if (this.waiting != null) {
      this.waiting.push(event)
      if (this.waiting.length > MAX_WAITING) this.lag()
      return
    }
    this.offer(event)
  }

  constructor (init: EventSubscriptionInit) {
    this.init = init
  }

  /** localId of the last event this subscriber has been offered (its resume cursor) */
  get cursor (): number {
    return this.lastSeen
  }

  /** Checks the cursor and access (throws BkgError before anything is sent), then starts. */
  async start (): Promise<void> {
    const { events, selector, after } = this.init
    if (after != null) await events.list(this.init.principal(), { namespace: selector.namespace, after, limit: 1 })
    else events.assertMayRead(this.init.principal(), selector.namespace)
    await events.ready()
    events.on('stored', this.onStored)
    // a replay that fails (the database closed, the transport broke) ends the subscription as lagged: it can resume
    this.replay(after ?? null).catch(() => this.lag())
  }

  stop (): void {
    this.stopped = true
    this.init.events.off('stored', this.onStored)
  }

  private async replay (after: string | null): Promise<void> {
    let cursor = after
    try {
      while (cursor != null && !this.stopped) {
        const page = await this.init.events.list(this.init.principal(), { namespace: this.init.selector.namespace, after: cursor, type: this.init.selector.type, limit: PAGE })
        let ready = true
        for (const event of page) ready = this.offer(event) && ready
        if (page.length > 0) this.lastSeen = Math.max(this.lastSeen, page.at(-1)!.localId)
        cursor = page.length === PAGE ? String(page.at(-1)!.localId) : null
        // backpressure: history is read no faster than the subscriber takes it
        if (!ready && !this.stopped) await this.init.drained()
      }
    } catch {
      // the subscriber is told it lagged and resumes from its cursor; a closing database or a broken transport needs no more
      this.lag()
      return
    }
    const queued = this.waiting ?? []
    this.waiting = null
    for (const event of queued) this.offer(event)
  }

  private offer (event: StoredEvent): boolean {
    if (this.stopped || event.localId <= this.lastSeen) return true
    // the transport's expiry timer tells the subscriber; nothing more is delivered in between
    if (msUntilExpiry(this.init.principal()) === 0) {
      this.stop()
      return true
    }
    this.lastSeen = event.localId
    if (!matches(this.init.selector, event)) return true
    return this.init.deliver(event)
  }

  private lag (): void {
    if (this.stopped) return
    this.stop()
    this.init.onLagged(this.lastSeen)
  }
}
