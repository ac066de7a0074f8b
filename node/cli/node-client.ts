import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { dataDirPaths } from '../identity/data-dir.ts'
import { CliError } from './errors.ts'

export interface NodeTarget {
  url: string
  token: string
}

export interface TargetOptions {
  data?: string
  api?: string
  token?: string
}

/** Finds a running node: `--api URL --token T` win, else the data dir's api.json and api-token. */
export async function resolveTarget (options: TargetOptions, defaultDataDir: string): Promise<NodeTarget> {
  const paths = dataDirPaths(options.data ?? defaultDataDir)
  let url = options.api
  if (url == null) {
    try {
      url = (JSON.parse(await readFile(paths.apiAddress, 'utf8')) as { url: string }).url
    } catch {
      throw new CliError(`no running node found for ${paths.dir} (no ${paths.apiAddress}); start it with \`bkg start --data ${paths.dir}\` or pass --api URL --token T`)
    }
  }
  let token = options.token ?? process.env.BKG_TOKEN
  if (token == null) {
    try {
      token = (await readFile(paths.apiToken, 'utf8')).trim()
    } catch {
      throw new CliError(`no API token: ${paths.apiToken} is missing; pass --token T`)
    }
  }
  return { url: url.replace(/\/$/, ''), token }
}

export async function callNode<T> (target: NodeTarget, method: string, path: string, body?: unknown): Promise<T> {
  return await send<T>(target, method, path, body !== undefined
    ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
    : {})
}

/** Streams a file as the request body (application/octet-stream), e.g. a model package. */
export async function uploadToNode<T> (target: NodeTarget, method: string, path: string, file: string): Promise<T> {
  const { size } = await stat(file)
  return await send<T>(target, method, path, {
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>,
    duplex: 'half'
  })
}

async function send<T> (target: NodeTarget, method: string, path: string, init: { headers?: Record<string, string>, body?: string | ReadableStream<Uint8Array>, duplex?: 'half' }): Promise<T> {
  let response: Response
  try {
    response = await fetch(`${target.url}${path}`, {
      method,
      ...init,
      headers: { authorization: `Bearer ${target.token}`, ...init.headers }
    } as RequestInit)
  } catch (err) {
    throw new CliError(`cannot reach the node at ${target.url}: ${(err as Error).message}`)
  }
  const text = await response.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string, message?: string } } | undefined)?.error
    throw new CliError(`node refused (${response.status}${error?.code != null ? ` ${error.code}` : ''}): ${error?.message ?? text.slice(0, 200)}`)
  }
  return json as T
}
