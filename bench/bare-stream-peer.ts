// Child process of bench/model-pull.ts: a stock libp2p node (TCP, Noise, Yamux) that swallows
// everything sent to it on /bench/sink/1.0.0 and answers with the byte count when the sender closes.
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'

export const SINK_PROTOCOL = '/bench/sink/1.0.0'

if (import.meta.url === `file://${process.argv[1]}`) {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()]
  })
  await node.handle(SINK_PROTOCOL, async (stream) => {
    let total = 0
    for await (const chunk of stream) total += chunk.byteLength
    stream.send(new TextEncoder().encode(String(total)))
    await stream.close()
  })
  console.log(node.getMultiaddrs()[0].toString())
  process.on('SIGTERM', () => { void Promise.resolve(node.stop()).then(() => process.exit(0)) })
}
