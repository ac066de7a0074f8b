import { formatHlc, parseHlc } from '../../protocols/events.ts'

const MAX_LOGICAL = 99_999
/** a peer's clock more than this far ahead is not followed (it would drag every later event with it) */
const MAX_DRIFT_MS = 60_000

/**
 * Hybrid logical clock (Kulkarni et al.): wall-clock milliseconds plus a counter, so timestamps
 * follow real time, never go backwards, and an event is always stamped after every event its
 * node had seen when it was made.
 */
export class HybridClock {
  private wall = 0
  private logical = 0
  private readonly now: () => number

  constructor (now: () => number = Date.now) {
    this.now = now
  }

  /** A timestamp for a new local event. */
  tick (): string {
    const physical = this.now()
    if (physical > this.wall) {
      this.wall = physical
      this.logical = 0
    } else if (this.logical < MAX_LOGICAL) {
      this.logical++
    } else {
      this.wall++
      this.logical = 0
    }
    return formatHlc(this.wall, this.logical)
  }

  /** Moves the clock past a timestamp seen on a received event. */
  observe (hlc: string): void {
    const seen = parseHlc(hlc)
    if (seen.wall > this.now() + MAX_DRIFT_MS) return
    if (seen.wall > this.wall || (seen.wall === this.wall && seen.logical > this.logical)) {
      this.wall = seen.wall
      this.logical = seen.logical
    }
  }
}
