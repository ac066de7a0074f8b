import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { parseNodeCertificate } from '../../../ca/index.ts'
import { createNamespaceToken, parseDuration, TOKEN_ROLES, type TokenRole } from '../../auth/index.ts'
import { dataDirPaths, defaultDataDir, loadSecret } from '../../identity/index.ts'
import { CliError } from '../errors.ts'
import { callNode, resolveTarget } from '../node-client.ts'

export function registerTokenCommands (program: Command): void {
  const token = program.command('token').description('API tokens')
  token.command('create')
    .description('issue a namespace-scoped API token (printed as the last line)')
    .option('--data <dir>', 'node data directory (signs with its token secret)', defaultDataDir())
    .requiredOption('--namespace <ns>', 'namespace the token is limited to')
    .option('--role <role>', 'reader|writer|admin', 'reader')
    .option('--ttl <duration>', 'lifetime: 90s, 30m, 12h, 7d or never', '30d')
    .option('--api <url>', 'ask this running node to issue it instead')
    .option('--token <token>', 'admin token for --api')
    .action(async (options: { data: string, namespace: string, role: string, ttl: string, api?: string, token?: string }) => {
      if (!(TOKEN_ROLES as readonly string[]).includes(options.role)) throw new CliError(`role "${options.role}" is not one of ${TOKEN_ROLES.join(', ')}`, 2)
      let issued: { token: string, expiresAt: string | null }
      let certified: string[] | null
      if (options.api != null) {
        const target = await resolveTarget(options, defaultDataDir())
        issued = await callNode(target, 'POST', '/api/v1/tokens', { namespace: options.namespace, role: options.role, ttl: options.ttl })
        certified = await callNode<{ cert: { namespaces: string[] } }>(target, 'GET', '/api/v1/node').then((node) => node.cert.namespaces, () => null)
      } else {
        const paths = dataDirPaths(options.data)
        const secret = await loadSecret(paths.tokenSecret, paths.dir)
        const { token: value, principal } = createNamespaceToken(secret, {
          namespace: options.namespace,
          role: options.role as TokenRole,
          ttlMs: parseDuration(options.ttl)
        })
        issued = { token: value, expiresAt: principal.expiresAt == null ? null : new Date(principal.expiresAt).toISOString() }
        certified = await readFile(paths.cert, 'utf8').then((pem) => parseNodeCertificate(pem).namespaces, () => null)
      }
      console.error(`token for namespace ${options.namespace}, role ${options.role}, expires ${issued.expiresAt ?? 'never'}`)
      // A warning, not a refusal: the token still works for object storage, and the operator may
      // be about to sign a certificate that adds the namespace. Events and realtime refuse it.
      if (certified != null && !certified.includes(options.namespace)) {
        console.error(`bkg: warning: this node's certificate does not list namespace ${options.namespace} (it lists: ${certified.join(', ') || 'none'}); its events and realtime channels answer 403 namespace_not_certified until the operator signs one with \`bkg ca sign … --namespaces ${[...certified, options.namespace].join(',')}\``)
      }
      console.log(issued.token)
    })
}
