/**
 * Finds stop strings in streamed text without ever sending a part of one: text that could still
 * become a stop string is held back until the next piece decides it.
 */
export class StopStrings {
  private readonly stops: string[]
  private held = ''

  constructor (stops: readonly string[]) {
    this.stops = stops.filter((stop) => stop.length > 0)
  }

  /** Text safe to send now, and whether a stop string was reached (the text before it is `text`). */
  push (piece: string): { text: string, stopped: boolean } {
    const text = this.held + piece
    let cut = -1
    for (const stop of this.stops) {
      const at = text.indexOf(stop)
      if (at >= 0 && (cut < 0 || at < cut)) cut = at
    }
    if (cut >= 0) {
      this.held = ''
      return { text: text.slice(0, cut), stopped: true }
    }
    const keep = this.heldSuffix(text)
    this.held = text.slice(text.length - keep)
    return { text: text.slice(0, text.length - keep), stopped: false }
  }

  /** What was held back when generation ended for another reason. */
  flush (): string {
    const rest = this.held
    this.held = ''
    return rest
  }

  /** the longest end of `text` that begins a stop string */
  private heldSuffix (text: string): number {
    let longest = 0
    for (const stop of this.stops) {
      for (let length = Math.min(stop.length - 1, text.length); length > longest; length--) {
        if (text.endsWith(stop.slice(0, length))) {
          longest = length
          break
        }
      }
    }
    return longest
  }
}
