/** One server-sent event as the test saw it. */
export interface SseFrame {
  event: string
  id?: string
  data: any
}

/**
 * Opens an SSE stream and collects its frames until closed; resolves once the first frame
 * (the server's `subscribed`) has arrived, or rejects with the JSON error of a refused request.
 */
export async function openSse (url: string, token: string, headers: Record<string, string> = {}, onFrame?: (frame: SseFrame, arrivedAt: number) => void): Promise<{ frames: SseFrame[], closed: Promise<void>, close: () => void }> {
  const controller = new AbortController()
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}`, ...headers }, signal: controller.signal })
  if (!response.ok || response.body == null) {
    const error = new Error(`SSE refused: HTTP ${response.status} ${await response.text()}`) as Error & { status: number }
    error.status = response.status
    throw error
  }
  const frames: SseFrame[] = []
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let first!: () => void
  const ready = new Promise<void>((resolve) => { first = resolve })
  const closed = (async () => {
    let buffer = ''
    try {
      while (true) {
        const { value, done } = await reader.read()
        if (done) return
        const arrivedAt = Date.now()
        buffer += value
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const text = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const event = /^event: (.*)$/m.exec(text)?.[1]
          const data = /^data: (.*)$/m.exec(text)?.[1]
          if (event == null) continue
          const frame = { event, id: /^id: (.*)$/m.exec(text)?.[1], data: data == null ? undefined : JSON.parse(data) }
          frames.push(frame)
          onFrame?.(frame, arrivedAt)
          first()
        }
      }
    } catch {
    } finally {
      first()
    }
  })()
  await ready
  return { frames, closed, close: () => controller.abort() }
}
