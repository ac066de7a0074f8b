import type { Host } from '../p2p/index.ts'
import { isOrbitdbTopic, ORBITDB_PROTOCOL_PREFIX, ORBITDB_TOPIC_PREFIX } from '../../protocols/ids.ts'

type Listener = (event: { detail: any }) => void

/**
 * The libp2p host as OrbitDB sees it: the same node, but every stream protocol OrbitDB registers
 * or dials and every gossip topic it uses is moved under BKG's namespace (protocols/ids.ts), so
 * the replica log never speaks a protocol or topic outside `/bkg/` and `bkg/`.
 */
export function orbitdbHost (host: Host): Host {
  const pubsub = host.services.pubsub
  const toProtocol = (protocol: string): string => `${ORBITDB_PROTOCOL_PREFIX}${protocol}`
  const toTopic = (topic: string): string => `${ORBITDB_TOPIC_PREFIX}${topic}`
  const fromTopic = (topic: string): string | undefined => isOrbitdbTopic(topic) ? topic.slice(ORBITDB_TOPIC_PREFIX.length) : undefined
  const wrapped = new Map<Listener, Listener>()

  function translate (type: string, listener: Listener): Listener {
    if (type === 'message') {
      return (event) => {
        const topic = fromTopic(event.detail.topic)
        if (topic != null) listener({ detail: { ...event.detail, topic } })
      }
    }
    if (type === 'subscription-change') {
      return (event) => {
        const subscriptions = event.detail.subscriptions
          .map((s: { topic: string, subscribe: boolean }) => ({ ...s, topic: fromTopic(s.topic) }))
          .filter((s: { topic?: string }) => s.topic != null)
        if (subscriptions.length > 0) listener({ detail: { ...event.detail, subscriptions } })
      }
    }
    return listener
  }

  const orbitPubsub = {
    subscribe: (topic: string) => { pubsub.subscribe(toTopic(topic)) },
    unsubscribe: (topic: string) => { pubsub.unsubscribe(toTopic(topic)) },
    publish: async (topic: string, data: Uint8Array) => await pubsub.publish(toTopic(topic), data),
    getSubscribers: (topic: string) => pubsub.getSubscribers(toTopic(topic)),
    addEventListener: (type: string, listener: Listener) => {
      const inner = translate(type, listener)
      wrapped.set(listener, inner)
      pubsub.addEventListener(type as 'message', inner as any)
    },
    removeEventListener: (type: string, listener: Listener) => {
      const inner = wrapped.get(listener) ?? listener
      wrapped.delete(listener)
      pubsub.removeEventListener(type as 'message', inner as any)
    }
  }

  return new Proxy(host, {
    get (target, property, receiver) {
      switch (property) {
        case 'services': return { ...target.services, pubsub: orbitPubsub }
        case 'handle': return async (protocol: string, handler: any, options?: any) => { await target.handle(toProtocol(protocol), handler, options) }
        case 'unhandle': return async (protocol: string) => { await target.unhandle(toProtocol(protocol)) }
        case 'dialProtocol': return async (peer: any, protocol: string, options?: any) => await target.dialProtocol(peer, toProtocol(protocol), options)
      }
      const value = Reflect.get(target, property, receiver)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
}
