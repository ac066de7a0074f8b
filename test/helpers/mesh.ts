import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initCa, type Role } from '../../ca/index.ts'
import { requestNode } from '../../node/cli/node-client.ts'
import { provisionNode } from '../../node/devnet/index.ts'
import { spawnNode, type NodeProcess } from '../../node/devnet/index.ts'
import { dataDirPaths, type DataDirPaths } from '../../node/identity/index.ts'
import { openSse } from './sse.ts'

export async function tempDir (prefix = 'bkg-test-'): Promise<{ dir: string, remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, remove: async () => await rm(dir, { recursive: true, force: true }) }
}

export interface TestNode {
  name: string
  paths: DataDirPaths
  peerId: string
  token: string
  proc?: NodeProcess
  /** API base URL of the running process */
  url: string
  /** listen addresses (with /p2p/) */
  addrs: string[]
  start: (extraArgs?: string[]) => Promise<void>
  stop: (signal?: NodeJS.Signals) => Promise<number | null>
  api: <T = any>(method: string, path: string, body?: unknown, token?: string) => Promise<{ status: number, body: T }>
}

export class TestMesh {
  readonly root: string
  readonly caDir: string
  readonly nodes: TestNode[] = []

  private constructor (root: string, caDir: string) {
    this.root = root
    this.caDir = caDir
  }

  static async create (root: string, caName = 'Test Operator'): Promise<TestMesh> {
    const caDir = join(root, 'ca')
    await initCa(caDir, { name: caName, days: 30 })
    return new TestMesh(root, caDir)
  }

  async addNode (name: string, init: { roles?: Role[], namespaces?: string[], caDir?: string, args?: string[], sans?: string[] } = {}): Promise<TestNode> {
    const paths = dataDirPaths(join(this.root, name))
    const peerId = await provisionNode(init.caDir ?? this.caDir, paths, { name, roles: init.roles ?? ['member'], namespaces: init.namespaces ?? ['default'], sans: init.sans })
    const token = (await readFile(paths.apiToken, 'utf8')).trim()
    const baseArgs = init.args ?? []
    const node: TestNode = {
      name,
      paths,
      peerId,
      token,
      url: '',
      addrs: [],
      async start (extraArgs = []) {
        node.proc = await spawnNode({
          args: ['--data', paths.dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', '--log-level', process.env.BKG_TEST_LOG ?? 'warn', ...baseArgs, ...extraArgs],
          onLog: process.env.BKG_TEST_LOG != null ? (line) => process.stderr.write(`[${name}] ${line}\n`) : undefined
        })
        node.url = node.proc.started.api
        node.addrs = node.proc.started.addrs.filter((addr) => !addr.includes('/p2p-circuit'))
      },
      async stop (signal) {
        const code = await node.proc?.stop(signal)
        node.proc = undefined
        return code ?? null
      },
      async api (method, path, body, overrideToken) {
        const headers = {
          ...(overrideToken !== '' ? { authorization: `Bearer ${overrideToken ?? token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {})
        }
        const payload = body !== undefined ? JSON.stringify(body) : undefined
        // an https node (--api-tls, or bound beyond loopback) is trusted through its data dir's ca.crt, as the CLI does
        const { status, text } = node.url.startsWith('https:')
          ? await requestNode(`${node.url}${path}`, { method, headers, body: payload }, { caPem: await readFile(paths.ca, 'utf8') })
          : await fetch(`${node.url}${path}`, { method, headers, body: payload }).then(async (response) => ({ status: response.status, text: await response.text() }))
        let parsed: any = text
        try { parsed = JSON.parse(text) } catch {}
        return { status, body: parsed }
      }
    }
    this.nodes.push(node)
    return node
  }

  async stopAll (): Promise<void> {
    await Promise.all(this.nodes.map(async (node) => await node.stop()))
  }
}

export async function waitFor<T> (what: string, probe: () => Promise<T | undefined | false | null>, timeoutMs = 15_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const value = await probe()
      if (value != null && value !== false) return value
    } catch (err) {
      last = err
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last != null ? `: ${String(last)}` : ''}`)
}

export async function peerIdsOf (node: TestNode): Promise<string[]> {
  const { body } = await node.api<Array<{ peerId: string }>>('GET', '/api/v1/peers?ping=false')
  return body.map((peer) => peer.peerId)
}

export interface TopicMessage {
  from: string
  /** payload as UTF-8 */
  data: string
  /** when the node received it from the mesh (node clock, ms epoch) */
  receivedAt: number
  /** when the SSE frame reached this process (ms epoch) */
  arrivedAt: number
}

/** Opens an SSE subscription to a pub/sub topic and collects the messages (and hands each to `onMessage`). */
export async function subscribeTopic (node: TestNode, topic: string, onMessage?: (message: TopicMessage) => void): Promise<{ messages: TopicMessage[], close: () => void }> {
  const messages: TopicMessage[] = []
  const stream = await openSse(`${node.url}/api/v1/pubsub/topics/${encodeURIComponent(topic)}/messages`, node.token, {}, (frame, arrivedAt) => {
    if (frame.event !== 'message' || frame.data == null) return
    const parsed = frame.data as { from: string, data: string, receivedAt: number }
    const message = { from: parsed.from, data: Buffer.from(parsed.data, 'base64').toString('utf8'), receivedAt: parsed.receivedAt, arrivedAt }
    messages.push(message)
    onMessage?.(message)
  })
  return { messages, close: stream.close }
}
