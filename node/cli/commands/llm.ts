import { writeFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { InvalidArgumentError, type Command } from 'commander'
import { ModelIdSchema } from '../../../protocols/infer.ts'
import { defaultDataDir } from '../../identity/index.ts'
import type { LlmModelInfo, MeshModel } from '../../llm/index.ts'
import { CliError, EXIT } from '../errors.ts'
import { callNode, requestNode, resolveTarget, type NodeTarget } from '../node-client.ts'
import { readInput } from '../options.ts'

interface TargetFlags { data: string, api?: string, token?: string }

function withTarget (command: Command, tokenHelp = 'API token (default: the data dir\'s admin token)'): Command {
  return command
    .option('--data <dir>', 'data dir of the running node', defaultDataDir())
    .option('--api <url>', 'node API URL instead of --data')
    .option('--token <token>', tokenHelp)
}

function number (min: number, max: number, integer: boolean) {
  return (value: string): number => {
    const n = Number(value)
    if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
      throw new InvalidArgumentError(`"${value}" is not ${integer ? 'a whole number' : 'a number'} from ${min} to ${max}`)
    }
    return n
  }
}

function modelId (value: string): string {
  if (!ModelIdSchema.safeParse(value).success) throw new InvalidArgumentError(`"${value}" is not a model: NAME@VERSION`)
  return value
}

/** the `default` model argument: the node's default model */
function chatModel (value: string): string | undefined {
  return value === 'default' ? undefined : modelId(value)
}

interface ChatDone {
  text: string
  finish_reason: string
  usage: { prompt_tokens: number, completion_tokens: number }
  model: string
  model_sha256: string
  backend: string
  served_by: string
  via_peer: boolean
  timings: { first_token_ms: number, total_ms: number }
}

/**
 * Streams a chat's SSE answer: `token` texts go to `onText` as they arrive; resolves with the
 * `done` result. A refusal (a non-2xx answer) or an `error` event is a CliError.
 */
async function streamChat (target: NodeTarget, body: unknown, onText: (text: string) => void): Promise<ChatDone> {
  let pending = ''
  let done: ChatDone | undefined
  let failure: { code: string, message: string } | undefined
  const onChunk = (chunk: string): void => {
    pending += chunk
    let end: number
    while ((end = pending.indexOf('\n\n')) >= 0) {
      const block = pending.slice(0, end)
      pending = pending.slice(end + 2)
      const event = /^event: (.*)$/m.exec(block)?.[1]
      const data = /^data: (.*)$/m.exec(block)?.[1]
      if (event == null || data == null) continue
      try {
        const value = JSON.parse(data)
        if (event === 'token') onText(value.text)
        else if (event === 'done') done = value
        else if (event === 'error') failure = value.error
      } catch {
        failure = { code: 'bad_stream', message: 'the node sent an event that is not JSON' }
      }
    }
  }
  let response: Awaited<ReturnType<typeof requestNode>>
  try {
    response = await requestNode(`${target.url}/api/v1/llm/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${target.token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ ...body as object, stream: true }),
      onText: onChunk
    }, target.tls)
  } catch (err) {
    throw new CliError(`cannot reach the node at ${target.url}: ${(err as Error).message}`)
  }
  if (response.status < 200 || response.status >= 300) {
    let error: { code?: string, message?: string } | undefined
    try {
      error = (JSON.parse(response.text) as { error?: { code?: string, message?: string } }).error
    } catch {}
    const retry = response.headers['retry-after'] != null ? ` (retry in ${String(response.headers['retry-after'])} s)` : ''
    throw new CliError(`node refused (${response.status}${error?.code != null ? ` ${error.code}` : ''}): ${error?.message ?? response.text.slice(0, 200)}${retry}`)
  }
  if (failure != null) throw new CliError(`the chat failed (${failure.code}): ${failure.message}`)
  if (done == null) throw new CliError('the node ended the stream without a result')
  return done
}

async function jsonSchemaOf (path: string | undefined): Promise<Record<string, unknown> | undefined> {
  if (path == null) return undefined
  const text = await readInput(path, 'the JSON schema')
  try {
    const schema = JSON.parse(text) as unknown
    if (schema == null || typeof schema !== 'object' || Array.isArray(schema)) throw new Error('not an object')
    return schema as Record<string, unknown>
  } catch (err) {
    throw new CliError(`${path} is not a JSON schema (a JSON object): ${(err as Error).message}`, EXIT.usage)
  }
}

function slotsText (slots: { busy: number, total: number, queued: number } | null): string {
  return slots == null ? '-' : `${slots.busy}/${slots.total}${slots.queued > 0 ? ` +${slots.queued} queued` : ''}`
}

function table (rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)))
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd()).join('\n')
}

export function registerLlmCommands (program: Command): void {
  const llm = program.command('llm').description('local inference on signed GGUF models (a running node)')

  withTarget(llm.command('chat')
    .description('chat with a model: the answer streams to stdout as it is generated; who served it goes to stderr')
    .argument('<model>', 'NAME@VERSION, or "default" for the node\'s default model', chatModel)
    .argument('<prompt>', 'the user message')
    .option('--system <text>', 'a system message before the prompt')
    .option('--max-tokens <n>', 'at most this many generated tokens', number(1, 1_000_000, true))
    .option('--temperature <t>', '0 (greedy) to 2', number(0, 2, false))
    .option('--seed <n>', 'seeded, deterministic sampling (the same text on every node)', number(0, 2 ** 32 - 1, true))
    .option('--json-schema <file>', 'constrain the answer to JSON matching this schema')
    .option('--placement <where>', 'auto | local | peer', 'auto'), 'API token (default: the data dir\'s admin token; any token may chat)')
    .action(async (model: string | undefined, prompt: string, options: TargetFlags & { system?: string, maxTokens?: number, temperature?: number, seed?: number, jsonSchema?: string, placement: string }) => {
      if (!['auto', 'local', 'peer'].includes(options.placement)) throw new CliError(`--placement must be auto, local or peer, not "${options.placement}"`, EXIT.usage)
      const schema = await jsonSchemaOf(options.jsonSchema)
      const target = await resolveTarget(options, defaultDataDir())
      const messages = [...(options.system != null ? [{ role: 'system', content: options.system }] : []), { role: 'user', content: prompt }]
      const done = await streamChat(target, {
        model,
        messages,
        max_tokens: options.maxTokens,
        temperature: options.temperature,
        seed: options.seed,
        placement: options.placement,
        ...(schema != null ? { response_format: { type: 'json_schema', json_schema: { name: 'answer', schema } } } : {})
      }, (text) => { process.stdout.write(text) })
      if (done.text !== '' && !done.text.endsWith('\n')) process.stdout.write('\n')
      const seconds = done.timings.total_ms / 1000
      const rate = seconds > 0 ? `, ${(done.usage.completion_tokens / seconds).toFixed(1)} tokens/s` : ''
      process.stderr.write(`served by ${done.served_by}${done.via_peer ? ' (a peer)' : ''}: ${done.model} (sha256 ${done.model_sha256.slice(0, 12)}…) on ${done.backend}; ` +
        `${done.usage.prompt_tokens} prompt + ${done.usage.completion_tokens} generated tokens, finish ${done.finish_reason}, first token ${Math.round(done.timings.first_token_ms)} ms${rate}\n`)
    })

  withTarget(llm.command('embed')
    .description('the embedding of a text, as JSON')
    .argument('<model>', 'NAME@VERSION, or "default"', chatModel)
    .argument('<text>', 'the text'), 'API token (default: the data dir\'s admin token; any token may embed)')
    .action(async (model: string | undefined, text: string, options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      const result = await callNode<{ served_by: string }>(target, 'POST', '/api/v1/llm/embed', { model, input: text })
      console.log(JSON.stringify(result))
    })

  withTarget(llm.command('ls').description('held GGUF models (loaded, default, slots) and the models peers serve'))
    .action(async (options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      const { models, mesh } = await callNode<{ models: LlmModelInfo[], mesh: MeshModel[], default: string | null }>(target, 'GET', '/api/v1/admin/llm/models')
      if (models.length === 0) console.log('no GGUF models held here (bkg model publish or pull one)')
      else {
        console.log(table([
          ['MODEL', 'STATE', 'SIZE', 'SLOTS', 'ARCH', 'SHA256'],
          ...models.map((model) => [
            model.id,
            `${model.loaded ? 'loaded' : 'held'}${model.default ? ', default' : ''}`,
            `${(model.size / 1024 / 1024).toFixed(1)} MiB`,
            slotsText(model.slots),
            model.gguf?.architecture ?? '?',
            model.sha256.slice(0, 12)
          ])
        ]))
      }
      if (mesh.length > 0) {
        console.log('\nserved by peers:')
        console.log(table([
          ['MODEL', 'PEER', 'SLOTS', 'LATENCY', 'SEEN'],
          ...mesh.map((entry) => [entry.id, entry.peerId, slotsText(entry.slots), entry.latencyMs != null ? `${Math.round(entry.latencyMs)} ms` : '-', entry.seenAt])
        ]))
      }
    })

  withTarget(llm.command('load')
    .description('verify a held model again and load it (admin token)')
    .argument('<model>', 'NAME@VERSION', modelId)
    .option('--pull', 'pull it from the mesh first when it is not held here')
    .option('--default', 'make it the model requests without one use'))
    .action(async (model: string, options: TargetFlags & { pull?: boolean, default?: boolean }) => {
      const target = await resolveTarget(options, defaultDataDir())
      const info = await callNode<LlmModelInfo>(target, 'POST', '/api/v1/admin/llm/models/load', { model, pull: options.pull === true, default: options.default === true })
      const facts = info.gguf != null ? `${info.gguf.architecture}, context ${info.gguf.contextLength ?? '?'}` : 'gguf'
      console.log(`${info.id} loaded (${facts}; ${slotsText(info.slots)} slots)${info.default ? ', default' : ''}`)
    })

  withTarget(llm.command('unload').description('unload a model (admin token)').argument('<model>', 'NAME@VERSION', modelId))
    .action(async (model: string, options: TargetFlags) => {
      const target = await resolveTarget(options, defaultDataDir())
      const info = await callNode<LlmModelInfo>(target, 'POST', '/api/v1/admin/llm/models/unload', { model })
      console.log(`${info.id} unloaded`)
    })

  llm.command('test-model')
    .description('write the project\'s tiny test model: a deterministic llama-architecture GGUF with seeded weights (pack it with `bkg model pack`)')
    .requiredOption('--out <file>', 'where to write it (FILE.gguf)')
    .option('--seed <n>', 'seeds the weights', number(0, 2 ** 32 - 1, true), 42)
    .option('--f32', 'f32 matrices (~470 KB) instead of f16 (~240 KB)')
    .option('--context-length <n>', 'the context length its header states', number(16, 1 << 20, true))
    .action(async (options: { out: string, seed: number, f32?: boolean, contextLength?: number }) => {
      // the inference code loads only for this command, not for every `bkg`
      const { testModelGguf } = await import('../../llm/index.ts')
      const bytes = testModelGguf({ seed: options.seed, weights: options.f32 === true ? 'f32' : 'f16', contextLength: options.contextLength })
      try {
        await writeFile(resolve(options.out), bytes)
      } catch (err) {
        throw new CliError(`cannot write ${options.out}: ${(err as Error).message}`)
      }
      console.log(`${options.out}: ${bytes.length} bytes (seed ${options.seed}, ${options.f32 === true ? 'f32' : 'f16'})`)
    })
}
