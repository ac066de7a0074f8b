import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { autoNAT } from '@libp2p/autonat'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { dcutr } from '@libp2p/dcutr'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { PrivateKey } from '@libp2p/interface'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { ping, type Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import type { AddressManager, NodeAddress } from '@libp2p/interface-internal'
import { createLibp2p, type Libp2p } from 'libp2p'
import { DHT_PROTOCOL, PROTOCOL_PREFIX } from '../../protocols/ids.ts'
import { admittingEncrypter, type AdmissionDeps, admissionGater } from '../admission/index.ts'
import type { NodeConfig } from '../config/index.ts'
import type { HostComponents } from './host-components.ts'

export interface HostServices {
  identify: unknown
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
  autonat?: unknown
  dcutr: unknown
  relay?: unknown
  upnp?: unknown
  [key: string]: unknown
}

export type Host = Libp2p<HostServices>

export interface HostInit {
  privateKey: PrivateKey
  config: NodeConfig
  admission: AdmissionDeps
  /** whether this node serves as a circuit relay (resolved from config and certificate roles) */
  relayServer: boolean
  /**
   * BKG's services that serve a libp2p protocol: built after the host's own (gossipsub among
   * them), started and stopped by libp2p with the host, found in `host.services` by name
   */
  services?: Record<string, (components: HostComponents) => unknown>
}

/**
 * The libp2p host: TCP + circuit relay transports, Noise wrapped by certificate admission, Yamux,
 * a private Kademlia DHT and gossipsub. Created stopped; the node starts it.
 */
export async function createHost (init: HostInit): Promise<Host> {
  const { config } = init
  const streamLimits = {
    maxInboundStreams: config.connections.maxStreamsPerProtocol,
    maxOutboundStreams: config.connections.maxStreamsPerProtocol
  }
  const relayLimits = config.relay.durationLimitMs === 0 && config.relay.dataLimitBytes === 0
    ? { applyDefaultLimit: false }
    : {
        applyDefaultLimit: true,
        defaultDurationLimit: config.relay.durationLimitMs === 0 ? 24 * 3600_000 : config.relay.durationLimitMs,
        defaultDataLimit: BigInt(config.relay.dataLimitBytes === 0 ? 2 ** 50 : config.relay.dataLimitBytes)
      }

  const services: Record<string, (components: any) => unknown> = {
    identify: identify({ protocolPrefix: PROTOCOL_PREFIX, ...streamLimits }),
    ping: ping({ protocolPrefix: PROTOCOL_PREFIX, ...streamLimits }),
    dht: kadDHT({
      protocol: DHT_PROTOCOL,
      clientMode: false,
      // meshes on 127.0.0.1 and private ranges must keep those addresses in the DHT
      peerInfoMapper: passthroughMapper,
      initialQuerySelfInterval: 200
    }),
    pubsub: gossipsub({
      emitSelf: false,
      allowPublishToZeroTopicPeers: true,
      globalSignaturePolicy: 'StrictSign',
      // validators decide; peers that keep sending rejected messages lose score and get pruned
      scoreParams: { IPColocationFactorWeight: 0, behaviourPenaltyWeight: -10 },
      scoreThresholds: { gossipThreshold: -100, publishThreshold: -200, graylistThreshold: -400 },
      heartbeatInterval: 1000,
      // without this every duplicate copy of a message pays an Ed25519 verification before it is
      // recognised (~30 % of a node's CPU under load); the signature is part of the id, so a
      // forged copy cannot shadow the real message
      fastMsgIdFn: fastMessageId,
      ...streamLimits
    }),
    dcutr: dcutr()
  }
  if (config.autonat) services.autonat = autoNAT({ protocolPrefix: PROTOCOL_PREFIX })
  if (init.relayServer) {
    services.relay = circuitRelayServer({
      reservations: { maxReservations: config.relay.maxReservations, ...relayLimits }
    })
  }
  if (config.upnp) {
    // opt-in, and its SSDP client is a noticeable share of start-up time
    const { uPnPNAT } = await import('@libp2p/upnp-nat')
    services.upnp = uPnPNAT()
  }

  for (const [name, create] of Object.entries(init.services ?? {})) {
    // libp2p adds each service to its components under its name: `events` would replace its event bus
    if (name in services || LIBP2P_COMPONENT_NAMES.has(name)) throw new Error(`a host service cannot be named ${name}: libp2p has a service or component of that name`)
    services[name] = create
  }

  // A relay reservation (listening on /p2p-circuit) is for nodes that cannot be dialled directly.
  // The relay transport's relay discovery walks the DHT without pause until it has a reservation,
  // so it is switched on by configuration, never on a relay itself.
  const reserve = config.relay.reserve && !init.relayServer
  const host = await createLibp2p({
    privateKey: init.privateKey,
    start: false,
    addresses: {
      listen: reserve ? [...config.listen, '/p2p-circuit'] : config.listen,
      announce: config.announce
    },
    transports: [tcp(), circuitRelayTransport()],
    connectionEncrypters: [admittingEncrypter(noise(), init.admission, config.admission)],
    streamMuxers: [yamux()],
    connectionGater: admissionGater(init.admission.peers),
    connectionManager: {
      maxConnections: config.connections.max,
      maxIncomingPendingConnections: config.connections.maxPendingInbound,
      inboundConnectionThreshold: config.connections.inboundPerSecondPerHost,
      inboundUpgradeTimeout: config.admission.timeoutMs + 2000
    },
    peerDiscovery: [],
    services
  })
  return host as unknown as Host
}

/** libp2p's own components, which a service of the same name would replace (libp2p 3) */
const LIBP2P_COMPONENT_NAMES = new Set([
  'peerId', 'privateKey', 'nodeInfo', 'logger', 'events', 'addressManager', 'peerStore', 'upgrader', 'metrics', 'registrar',
  'connectionManager', 'transportManager', 'connectionGater', 'contentRouting', 'peerRouting', 'datastore', 'connectionProtector',
  'dns', 'randomWalk', 'connectionMonitor'
])

const EMPTY = new Uint8Array(0)

function fastMessageId (message: { from?: Uint8Array, seqno?: Uint8Array, signature?: Uint8Array, data?: Uint8Array }): string {
  return Buffer.concat([message.from ?? EMPTY, message.seqno ?? EMPTY, message.signature ?? message.data ?? EMPTY]).toString('base64')
}

/** kad-dht keeps its routing table off the public KadDHT interface; this is the one place that reaches it. */
export function routingTableSize (host: Host): number {
  return (host.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
}

/** Addresses with AutoNAT's verification state, from libp2p's address manager. */
export function addressesWithMetadata (host: Host): NodeAddress[] {
  return (host as unknown as { components: { addressManager: AddressManager } }).components.addressManager.getAddressesWithMetadata()
}
