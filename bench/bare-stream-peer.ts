// Child processes of bench/model-pull.ts, the bare-stream baseline: stock libp2p nodes (TCP, Noise,
// Yamux). `bare-stream-peer.ts` swallows everything sent to it on /bench/sink/1.0.0, answers with
// the byte count when the sender closes and prints its address; `bare-stream-peer.ts send ADDR
// BYTES` sends BYTES to ADDR on one stream and prints the MiB/s from its first byte to the answer.
import { randomBytes } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

export const SINK_PROTOCOL = '/bench/sink/1.0.0'

const MIB = 1024 * 1024

async function sink (): Promise<void> {
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

async function send (addr: string, bytes: number): Promise<void> {
  const node = await createLibp2p({ transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] })
  try {
    const stream = await node.dialProtocol(multiaddr(addr), SINK_PROTOCOL)
    const chunk = randomBytes(MIB)
    const started = performance.now()
    for (let sent = 0; sent < bytes; sent += chunk.byteLength) {
      if (!stream.send(chunk)) await stream.onDrain()
    }
    await stream.close()
    let answer = ''
    for await (const part of stream) answer += new TextDecoder().decode(part.subarray())
    if (Number(answer) !== bytes) throw new Error(`the sink counted ${answer} bytes, ${bytes} were sent`)
    console.log(String((bytes / MIB) / ((performance.now() - started) / 1000)))
  } finally {
    await node.stop()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv[2] === 'send') await send(process.argv[3], Number(process.argv[4]))
  else await sink()
}
