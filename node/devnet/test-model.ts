import { createReadStream } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseNodeCertificate } from '../../ca/index.ts'
import { exists } from '../../lib/fs.ts'
import type { DataDirPaths } from '../identity/index.ts'
import { testModelGguf } from '../llm/index.ts'
import { packModel } from '../model-packages/index.ts'

/** The model `npm start` serves: the project's own tiny llama, signed by node-1. */
export const DEVNET_MODEL = { name: 'tiny-llama', version: '1.0.0' }
export const DEVNET_MODEL_ID = `${DEVNET_MODEL.name}@${DEVNET_MODEL.version}`

/**
 * Makes the test model's signed package (once per devnet dir), has node-1 publish it through its
 * API as an operator would (`bkg model publish`), and load it, so a fresh devnet answers
 * `/v1/chat/completions` at once.
 */
export async function serveDevnetModel (dir: string, publisher: DataDirPaths, api: string, token: string): Promise<void> {
  const packagePath = join(dir, `${DEVNET_MODEL.name}-${DEVNET_MODEL.version}.bkg`)
  if (!await exists(packagePath)) {
    const source = join(dir, 'test-model')
    await mkdir(source, { recursive: true })
    await writeFile(join(source, `${DEVNET_MODEL.name}.gguf`), testModelGguf())
    const certPem = await readFile(publisher.cert, 'utf8')
    await packModel({
      source,
      ...DEVNET_MODEL,
      architecture: 'llama',
      licence: 'MIT',
      publisher: { certPem, keyPem: await readFile(publisher.x509Key, 'utf8') },
      publisherCert: parseNodeCertificate(certPem),
      out: packagePath
    })
  }
  const authorization = `Bearer ${token}`
  const published = await fetch(`${api}/api/v1/models`, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/octet-stream' },
    body: createReadStream(packagePath) as unknown as RequestInit['body'],
    duplex: 'half'
  } as RequestInit)
  if (!published.ok) throw new Error(`node-1 did not take the test model: ${published.status} ${await published.text()}`)
  const loaded = await fetch(`${api}/api/v1/admin/llm/models/load`, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: JSON.stringify({ model: DEVNET_MODEL_ID })
  })
  if (!loaded.ok) throw new Error(`node-1 did not load the test model: ${loaded.status} ${await loaded.text()}`)
}
