import type { FastifyPluginAsync } from 'fastify'
import type { WebSocket } from 'ws'
import { verifyToken } from '../../auth/index.ts'
import { RealtimeSession, type EventService, type RoomHub } from '../../events/index.ts'
import type { ApiKeys } from '../auth.ts'
import { tokenWebSocketRoute } from '../token-websocket.ts'

const PING_MS = 20_000
/** a client that answered no ping and sent nothing for this long is gone */
const SILENCE_MS = 60_000
const DRAIN_CHECK_MS = 250
/** a lagged client that drains nothing for this long is cut without waiting further */
const STALL_MS = 60_000

/**
 * `WS /realtime`: channels of events, broadcast and presence (protocols/realtime.ts). The token
 * comes in the `Authorization` header or, for browsers (whose WebSocket cannot set headers), as
 * `?token=`; it is checked before the upgrade, so a refusal is a plain 401 JSON response.
 */
export const realtimeRoutes: FastifyPluginAsync<{ events: EventService, rooms: RoomHub, keys: ApiKeys }> = async (app, { events, rooms, keys }) => {
  tokenWebSocketRoute(app, {
    url: '/realtime',
    summary: 'Realtime channels over WebSocket (see docs/api.md, "Realtime")',
    tags: ['events'],
    keys,
    onSocket: (socket: WebSocket, request) => {
      let lastHeard = Date.now()
      const session = new RealtimeSession({
        events,
        rooms,
        verifyToken: (token) => verifyToken(token, keys)
      }, {
        send: (message) => { if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message)) },
        buffered: () => socket.bufferedAmount,
        drained: async () => {
          while (socket.readyState === socket.OPEN && socket.bufferedAmount > 0) await new Promise((resolve) => setTimeout(resolve, 10))
        },
        close: (code, reason) => {
        // the lagged message sits behind what is queued: the close goes out once the client has
        // drained it (ws would otherwise cut the socket 30 s after close() and drop both), and a
        // client that makes no progress for STALL_MS is cut
          let queued = socket.bufferedAmount
          let still = 0
          const watch = setInterval(() => {
            if (socket.readyState !== socket.OPEN) return clearInterval(watch)
            if (socket.bufferedAmount === 0) {
              clearInterval(watch)
              socket.close(code, reason)
              return
            }
            still = socket.bufferedAmount < queued ? 0 : still + DRAIN_CHECK_MS
            queued = socket.bufferedAmount
            if (still >= STALL_MS) {
              clearInterval(watch)
              socket.terminate()
            }
          }, DRAIN_CHECK_MS)
          watch.unref()
        }
      }, request.principal!)
      const ping = setInterval(() => {
        if (Date.now() - lastHeard > SILENCE_MS) {
          socket.terminate()
          return
        }
        socket.ping()
      }, PING_MS)
      ping.unref()
      socket.on('pong', () => { lastHeard = Date.now() })
      socket.on('message', (data, isBinary) => {
        lastHeard = Date.now()
        if (isBinary) {
          socket.send(JSON.stringify({ type: 'error', error: { code: 'invalid_message', message: 'frames are JSON text' } }))
          return
        }
        session.handle(data.toString()).catch((err: unknown) => {
        // handle() answers every refusal itself: whatever reaches here is a bug, and one client's
        // frame must not take the node down with it
          request.log.error({ err }, 'realtime frame failed')
          if (socket.readyState === socket.OPEN) socket.close(1011, 'internal error')
        })
      })
      socket.on('close', () => {
        clearInterval(ping)
        session.close()
      })
    }
  })
}
