import { runBkgOk } from './cli.ts'
import type { TestNode } from './mesh.ts'

/** A namespace token from `bkg token create` (its last line of output). */
export function createToken (node: TestNode, namespace: string, role: 'reader' | 'writer' | 'admin', ttl?: string): string {
  const args = ['token', 'create', '--data', node.paths.dir, '--namespace', namespace, '--role', role, ...(ttl != null ? ['--ttl', ttl] : [])]
  return runBkgOk(args, node.paths.dir).stdout.trim().split('\n').at(-1)!
}

/** Every event of a namespace the token may see on `node`, in arrival order (all pages). */
export async function listEvents (node: TestNode, namespace: string, token?: string): Promise<any[]> {
  const all: any[] = []
  let after: string | null = '0'
  while (after != null) {
    const { status, body }: { status: number, body: any } = await node.api('GET', `/api/v1/events?namespace=${namespace}&limit=1000&after=${after}`, undefined, token)
    if (status !== 200) throw new Error(`${node.name}: GET /api/v1/events answered ${status}: ${JSON.stringify(body)}`)
    all.push(...body.events)
    after = body.next
  }
  return all
}
