import type { Command } from 'commander'
import { NAMESPACE_PATTERN } from '../../../ca/roles.ts'
import { TOKEN_ROLES, type TokenRole } from '../../auth/index.ts'
import { dataDirPaths, defaultDataDir, loadSecret } from '../../identity/index.ts'
import { createS3Credentials } from '../../auth/index.ts'
import { CliError } from '../errors.ts'

export function registerStorageCommands (program: Command): void {
  const storage = program.command('storage').description('object storage')
  storage.command('credentials')
    .description('S3 access keys for a namespace (SigV4, path-style, any region): prints {accessKeyId, secretAccessKey}')
    .option('--data <dir>', 'node data directory (derives the keys from its token secret)', defaultDataDir())
    .requiredOption('--namespace <ns>', 'namespace the keys are limited to')
    .option('--role <role>', 'reader|writer|admin (admin may also create and delete buckets)', 'writer')
    .action(async (options: { data: string, namespace: string, role: string }) => {
      if (!(TOKEN_ROLES as readonly string[]).includes(options.role)) throw new CliError(`role "${options.role}" is not one of ${TOKEN_ROLES.join(', ')}`, 2)
      if (!NAMESPACE_PATTERN.test(options.namespace)) throw new CliError(`namespace "${options.namespace}" is not valid: 1-63 of a-z 0-9 . _ -, starting with a letter or digit`, 2)
      const paths = dataDirPaths(options.data)
      const secret = await loadSecret(paths.tokenSecret, paths.dir)
      const credentials = createS3Credentials(secret, options.namespace, options.role as TokenRole)
      console.error(`S3 keys for namespace ${options.namespace}, role ${options.role}: endpoint <node API>/s3, path-style, any region`)
      console.log(JSON.stringify(credentials))
    })
}
