import { readFile } from 'node:fs/promises'
import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { byteStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AdmittedPeers } from '../../node/admission/admitted-peers.ts'
import { Trust } from '../../node/admission/trust.ts'
import { resolveConfig } from '../../node/config/index.ts'
import { loadLibp2pKey } from '../../node/identity/index.ts'
import { createHost, type Host } from '../../node/p2p/host.ts'
import { peerIdsOf, tempDir, TestMesh, type TestNode } from '../helpers/mesh.ts'

const silent = pino({ level: 'silent' })

/** An in-process libp2p host with BKG admission, built from a data dir's key and chosen certificate. */
async function hostFor (keyDir: TestNode, certFrom: TestNode): Promise<Host> {
  const trust = new Trust({
    caPem: await readFile(certFrom.paths.ca, 'utf8'),
    certPem: await readFile(certFrom.paths.cert, 'utf8'),
    crlPath: `${keyDir.paths.dir}/ignored-crl.pem`
  })
  const host = await createHost({
    privateKey: await loadLibp2pKey(keyDir.paths),
    config: resolveConfig({ listen: ['/ip4/127.0.0.1/tcp/0'], autonat: false }),
    relayServer: false,
    admission: { trust, peers: new AdmittedPeers(), log: silent }
  })
  await host.start()
  return host
}

describe('admitted-looking abuse', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh
  let target: TestNode
  let thief: TestNode
  let honest: TestNode

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
    target = await mesh.addNode('target', { roles: ['admin', 'member'] })
    await target.start()
    // provisioned but never started: their keys and certificates are used in-process
    thief = await mesh.addNode('thief')
    honest = await mesh.addNode('honest')
  })

  afterAll(async () => {
    await mesh?.stopAll()
    await tmp?.remove()
  })

  it('a valid certificate presented under another PeerId (a stolen cert) is refused', async () => {
    const host = await hostFor(thief, honest) // thief's key, honest's certificate
    try {
      await expect((async () => {
        const connection = await host.dial(multiaddr(target.addrs[0]), { signal: AbortSignal.timeout(8000) })
        await new Promise((resolve) => setTimeout(resolve, 500))
        if (connection.status === 'open') return 'open'
        throw new Error('closed')
      })()).rejects.toThrow()
      expect(await peerIdsOf(target)).not.toContain(thief.peerId)
      const metrics = await target.api('GET', '/metrics')
      expect(metrics.body).toMatch(/bkg_admissions_total\{result="rejected",code="cert_peer_mismatch"\} 1/)
    } finally {
      await host.stop()
    }
  })

  it('per-peer stream limits hold for an admitted peer, and its connection survives', async () => {
    const host = await hostFor(honest, honest)
    try {
      const connection = await host.dial(multiaddr(target.addrs[0]), { signal: AbortSignal.timeout(8000) })
      expect(await peerIdsOf(target)).toContain(honest.peerId)
      const protocol = '/bkg/ping/1.0.0'
      // open far more concurrent streams of one protocol than the limit (64) and hold them
      // (a stream counts as served once the remote echoed a ping payload on it)
      const streams: Stream[] = []
      const attempts = await Promise.allSettled(Array.from({ length: 150 }, async () => {
        const signal = AbortSignal.timeout(5000)
        const stream = await connection.newStream(protocol, { signal, runOnLimitedConnection: false })
        streams.push(stream)
        const bytes = byteStream(stream)
        await bytes.write(new Uint8Array(32).fill(7), { signal })
        await bytes.read({ bytes: 32, signal })
      }))
      const served = attempts.filter((a) => a.status === 'fulfilled').length
      expect(served).toBeGreaterThan(0)
      expect(served).toBeLessThanOrEqual(64)
      for (const stream of streams) stream.abort(new Error('done'))
      await new Promise((resolve) => setTimeout(resolve, 200))
      // the peer is still admitted and usable
      const rtt = await host.services.ping.ping(peerIdFromString(target.peerId), { signal: AbortSignal.timeout(5000) })
      expect(rtt).toBeGreaterThanOrEqual(0)
    } finally {
      await host.stop()
    }
  })
})
