import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NodeConfig } from '../../node/config/index.ts'
import { createNode } from '../../node/create-node.ts'
import { helloService } from '../fixtures/hello/index.ts'
import { tempDir, TestMesh } from '../helpers/mesh.ts'

/** issue 11: a new service is a folder and one entry; here it joins a node without touching the root */
describe('a new service wired into a node', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let mesh: TestMesh

  beforeAll(async () => {
    tmp = await tempDir()
    mesh = await TestMesh.create(tmp.dir)
  })

  afterAll(async () => {
    await tmp?.remove()
  })

  it('starts with the node, answers its protocol, and stops with it', async () => {
    const provisioned = await mesh.addNode('hello-node')
    const node = await createNode({
      dataDir: provisioned.paths.dir,
      config: NodeConfig.parse({ listen: ['/ip4/127.0.0.1/tcp/0'], api: '127.0.0.1:0', logLevel: 'silent' }),
      log: pino({ level: 'silent' }),
      extraServices: [['hello', helloService({ protocol: '/bkg-test/hello/1.0.0' })]]
    })
    await node.start()
    try {
      expect(node.host.getProtocols()).toContain('/bkg-test/hello/1.0.0')
      const health = await fetch(`${node.url}/api/v1/health`)
      expect(health.status).toBe(200)
    } finally {
      await node.stop()
    }
    expect(node.host.getProtocols()).not.toContain('/bkg-test/hello/1.0.0')
  })
})
