import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { DHT_PROTOCOL, PROTOCOL_PREFIX } from '../../protocols/ids.ts'

/**
 * A stock libp2p peer without a certificate that speaks every protocol a BKG node speaks
 * (same DHT protocol, same identify prefix, gossipsub): what an intruder would run.
 */
export async function createStockPeer () {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: {
      identify: identify({ protocolPrefix: PROTOCOL_PREFIX }),
      ping: ping({ protocolPrefix: PROTOCOL_PREFIX }),
      dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper }),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
    }
  })
}
