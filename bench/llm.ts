import { spawn } from 'node:child_process'
import { mkdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ChatWrapper, LlamaContext, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp'
import { CLI_ENTRY } from '../node/devnet/index.ts'
import { defaultThreads, LLM_DEFAULTS } from '../node/llm/constants.ts'
import { chatPrompt } from '../node/llm/local/chat-prompt.ts'
import { LlamaRuntime } from '../node/llm/local/llama-runtime.ts'
import { LoadedModel } from '../node/llm/local/loaded-model.ts'
import { TEST_MODEL_FACTS } from '../node/llm/gguf/test-model.ts'
import { packTestModel, type PackedTestModel } from '../test/helpers/llm.ts'
import { peerIdsOf, tempDir, TestMesh, waitFor, type TestNode } from '../test/helpers/mesh.ts'
import { errorText, failedMetric, machineCpuMs, median, metric, metricsTable, pollUntil, processCpuMs, progress, round, type Metric } from './lib.ts'

/** the same work both ways: one prompt, greedy, a fixed number of tokens (the test model never ends a turn by itself) */
const MAX_TOKENS = 400
/** rounds of each way paired with a direct run, after WARMUP_ROUNDS untimed */
const ROUNDS = 7
const WARMUP_ROUNDS = 1
const CONCURRENCY = [1, 4, 8]
const CONCURRENCY_REPEATS = 3
const PEER_ROUNDS = 7
/** how long B may take to hear that A serves the model (nodes announce every few seconds and at each change) */
const ANNOUNCE_WAIT_MS = 10_000
const PROFILE_HINT = "profile the node with BKG_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof' node bench/llm.ts"

type Via = 'direct' | 'service' | 'json' | 'sse' | 'ws' | 'openai'

/** One generation as the caller saw it, and the node's own split of it when it reports one. */
interface Run {
  ttftMs: number
  totalMs: number
  tokens: number
  text: string
  /** the result's `timings` (accepted → first token, → end; waiting for a sequence) */
  server?: { queuedMs: number, firstTokenMs: number, totalMs: number }
  /** the answer names a peer as its server (`via_peer`) */
  viaPeer?: boolean
  /** CPU time over the run (all threads): of this process, and of the node asked */
  cpu?: { benchMs: number, nodeMs: number }
}

const messagesFor = (round: number): Array<{ role: 'user', content: string }> =>
  // a different start each round, so the node's prompt cache (a sequence keeps the longest common
  // prefix) does not spare it prompt work the direct run does
  [{ role: 'user', content: `${round}: tell me how the mesh answers a question, in a few words.` }]

/**
 * Issue 13's inference rows: tokens/s through SSE, WebSocket and /v1/chat/completions against
 * node-llama-cpp called directly in this process on the same file and context settings (in turns,
 * medians), the first-token overhead, aggregate tokens/s with 1, 4 and 8 requests at once, the
 * cost of a peer answering for a node without the model, and the node's RSS with the model loaded.
 */
export async function measureLlm (root: string): Promise<Metric[]> {
  const rows: Metric[] = []
  const dir = join(root, 'llm')
  let mesh: TestMesh | undefined
  let runtime: LlamaRuntime | undefined
  let direct: DirectModel | undefined
  let service: { chat: ChatClient, dispose: () => Promise<void> } | undefined
  try {
    progress('llm: two nodes, the test model packed and published on the first')
    mesh = await TestMesh.create(dir, 'Bench LLM Operator')
    const a = await mesh.addNode('llm-a', { roles: ['publisher', 'admin', 'bootstrap', 'member'] })
    const model = await packTestModel({ dir, publisher: a.paths })
    await a.start()
    const b = await mesh.addNode('llm-b', { args: ['--bootstrap', a.addrs[0]] })
    await b.start()
    nodePids = [a, b].map((node) => node.proc!.child.pid!)
    await waitFor('llm-b admitted', async () => (await peerIdsOf(a)).includes(b.peerId))
    await publish(model, a)
    await waitFor('the GGUF header read', async () => (await a.api('GET', '/api/v1/admin/llm/models')).body.models?.some((entry: any) => entry.id === model.id && entry.gguf != null))
    const rssIdle = await rssMiB(a)
    const loaded = await a.api('POST', '/api/v1/admin/llm/models/load', { model: model.id })
    if (loaded.status !== 200) throw new Error(`loading ${model.id}: HTTP ${loaded.status} ${JSON.stringify(loaded.body)}`)
    const rssLoaded = await rssMiB(a)

    const path = join(a.paths.dir, 'models', 'files', model.name, model.version, model.file)
    await stat(path)
    runtime = new LlamaRuntime({ gpu: false, maxThreads: defaultThreads() })
    direct = await DirectModel.load(path, runtime)
    service = await serviceClient(runtime, path, model)
    const clients = await openClients(a, model.id)
    try {
      rows.push(...await transports(direct, service.chat, clients))
      rows.push(...await concurrency(a, model.id, direct))
    } finally {
      clients.close()
    }
    rows.push(...await peerFallback(a, b, model.id))
    const rssAfter = await rssMiB(a)
    rows.push(metric({
      id: 'llm_node_rss_loaded_mib',
      name: 'node RSS with the test model loaded',
      value: round(rssLoaded),
      unit: 'MiB',
      target: null,
      note: `${round(rssIdle)} MiB before the load (+${round(rssLoaded - rssIdle)}: addon, ${LLM_DEFAULTS.parallel}×${LLM_DEFAULTS.contextSize}-token KV cache, ${round(model.size / 2 ** 20, 2)} MiB GGUF); ${round(rssAfter)} MiB after the runs`,
      detail: { idleMiB: round(rssIdle), loadedMiB: round(rssLoaded), afterRunsMiB: round(rssAfter), ggufBytes: model.size }
    }))
  } catch (err) {
    progress(`llm: ${errorText(err)}`)
    rows.push(failedMetric('llm_sse_tokens_ratio', 'LLM tokens/s via SSE / direct', '×', { op: '>', value: 0.97 }, err))
  } finally {
    await service?.dispose().catch(() => {})
    await direct?.dispose().catch(() => {})
    await runtime?.stop().catch(() => {})
    await mesh?.stopAll().catch(() => {})
  }
  return rows
}

// ---- rows ----

const LABELS: Record<Exclude<Via, 'direct'>, string> = {
  service: 'the node\'s LoadedModel in this process',
  json: 'POST /api/v1/llm/chat (JSON)',
  sse: 'SSE /api/v1/llm/chat',
  ws: 'WebSocket /api/v1/llm/chat/ws',
  openai: 'SSE /v1/chat/completions'
}

/**
 * Each way paired with a direct run right before or after it (the order alternates), the ways
 * rotated each round; a pair's two runs see the same state of this shared machine, and the figures
 * are medians over the pairs. Besides the three targets (SSE, WebSocket, OpenAI SSE), two context
 * ways split the distance from direct: the node's own model code (LoadedModel and its generate)
 * run in this process, and the node answering in one JSON body (no write per token).
 */
async function transports (direct: DirectModel, service: ChatClient, clients: Clients): Promise<Metric[]> {
  const ways: Array<Exclude<Via, 'direct'>> = ['service', 'json', 'sse', 'ws', 'openai']
  progress(`llm: ${MAX_TOKENS} tokens, direct paired with each of ${ways.join(', ')} (${ROUNDS} rounds after ${WARMUP_ROUNDS} untimed)`)
  const pairs: Record<Exclude<Via, 'direct'>, Array<{ direct: Run, via: Run }>> = { service: [], json: [], sse: [], ws: [], openai: [] }
  const texts = new Set<string>()
  const cpu = await cpuWatch()
  for (let round = 0; round < WARMUP_ROUNDS + ROUNDS; round++) {
    const messages = messagesFor(round)
    for (let i = 0; i < ways.length; i++) {
      const way = ways[(i + round) % ways.length]
      const viaRun = async (): Promise<Run> => await withCpu(async () => way === 'service' ? await service(messages, MAX_TOKENS) : await clients[way](messages, MAX_TOKENS))
      const directRun = async (): Promise<Run> => await withCpu(async () => await direct.run(messages, MAX_TOKENS))
      const directFirst = (round + i) % 2 === 0
      const first = directFirst ? await directRun() : await viaRun()
      const second = directFirst ? await viaRun() : await directRun()
      const pair = directFirst ? { direct: first, via: second } : { direct: second, via: first }
      for (const [name, run] of [['direct', pair.direct], [way, pair.via]] as const) {
        if (run.tokens !== MAX_TOKENS) throw new Error(`${name} generated ${run.tokens} tokens, not ${MAX_TOKENS}`)
        if (round === WARMUP_ROUNDS) texts.add(run.text)
      }
      if (round >= WARMUP_ROUNDS) pairs[way].push(pair)
    }
  }
  const foreign = await cpu.foreignPercent()
  const rate = (run: Run): number => run.tokens / (run.totalMs / 1000)
  const perToken = (ms: number): number => round((1000 * ms) / MAX_TOKENS, 1)
  const directRuns = Object.values(pairs).flatMap((list) => list.map((pair) => pair.direct))
  const directRate = median(directRuns.map(rate))
  const directTtft = median(directRuns.map((run) => run.ttftMs))
  const rows: Metric[] = [metric({
    id: 'llm_direct_tokens_s',
    name: 'LLM direct node-llama-cpp (baseline)',
    value: round(directRate),
    unit: 'tok/s',
    target: null,
    note: `${MAX_TOKENS} tokens greedy, ${defaultThreads()} thread(s), context ${LLM_DEFAULTS.contextSize}×${LLM_DEFAULTS.parallel} seq; first token ${round(directTtft, 2)} ms; same text every way: ${texts.size === 1 ? 'yes' : 'NO'}; other processes used ${round(foreign)} % of the machine meanwhile`,
    detail: { medianTotalMs: round(median(directRuns.map((run) => run.totalMs))), medianTtftMs: round(directTtft, 3), runs: directRuns.length, sameTextAllWays: texts.size === 1, foreignCpuPercent: round(foreign) }
  })]
  for (const way of ['sse', 'ws', 'openai', 'json', 'service'] as const) {
    const list = pairs[way]
    const ratio = median(list.map((pair) => rate(pair.via) / rate(pair.direct)))
    const extra = median(list.map((pair) => pair.via.totalMs - pair.direct.totalMs))
    const withServer = list.filter((pair) => pair.via.server != null)
    // the extra time per token, split where the node reports its own timings: inside the node
    // (accepted → done, its writes included) and outside it (HTTP, the client)
    const inNode = median(withServer.map((pair) => pair.via.server!.totalMs - pair.direct.totalMs))
    const outside = median(withServer.map((pair) => pair.via.totalMs - pair.via.server!.totalMs))
    const split = withServer.length > 0 && way !== 'service' ? `: in the node ${perToken(inNode)}, HTTP and client ${perToken(outside)}` : ''
    const targeted = way === 'sse' || way === 'ws' || way === 'openai'
    // CPU per token (summed over the pairs: /proc counts in 10 ms ticks): the node's, and this process's (the client; the model itself for service)
    const cpuPerToken = (runs: Run[], of: 'benchMs' | 'nodeMs'): number => round((1000 * runs.reduce((sum, run) => sum + (run.cpu?.[of] ?? 0), 0)) / runs.reduce((sum, run) => sum + run.tokens, 0), 1)
    const cpu = { nodeUsPerToken: cpuPerToken(list.map((pair) => pair.via), 'nodeMs'), benchUsPerToken: cpuPerToken(list.map((pair) => pair.via), 'benchMs'), directUsPerToken: cpuPerToken(list.map((pair) => pair.direct), 'benchMs') }
    const cpuNote = way === 'service'
      ? `; CPU ${cpu.benchUsPerToken} µs/token vs direct ${cpu.directUsPerToken}`
      : `; CPU µs/token: node ${cpu.nodeUsPerToken}, client ${cpu.benchUsPerToken}, direct ${cpu.directUsPerToken}`
    rows.push(metric({
      id: `llm_${way}_tokens_ratio`,
      name: targeted ? `LLM tokens/s via ${LABELS[way]} / direct` : `  context: ${LABELS[way]} / direct`,
      value: round(ratio, 3),
      unit: '×',
      target: targeted ? { op: '>', value: 0.97 } : null,
      note: `${round(median(list.map((pair) => rate(pair.via))))} tok/s; +${perToken(extra)} µs/token${split} (medians of ${list.length} pairs)${cpuNote}${!targeted || ratio > 0.97 ? '' : `; ${PROFILE_HINT}`}`,
      detail: {
        tokensPerSecond: round(median(list.map((pair) => rate(pair.via)))),
        pairRatios: list.map((pair) => round(rate(pair.via) / rate(pair.direct), 3)),
        perTokenOverheadUs: perToken(extra),
        inNodePerTokenUs: withServer.length > 0 ? perToken(inNode) : null,
        outsidePerTokenUs: withServer.length > 0 ? perToken(outside) : null,
        cpu,
        server: serverSplit(list.map((pair) => pair.via))
      }
    }))
  }
  // the first token, pair by pair
  const sse = pairs.sse
  const overhead = median(sse.map((pair) => pair.via.ttftMs - pair.direct.ttftMs))
  const sseServer = serverSplit(sse.map((pair) => pair.via))
  const sseTtft = median(sse.map((pair) => pair.via.ttftMs))
  const ttftOver = (way: Exclude<Via, 'direct'>): number => round(median(pairs[way].map((pair) => pair.via.ttftMs - pair.direct.ttftMs)), 2)
  rows.push(metric({
    id: 'llm_ttft_overhead_ms',
    name: 'LLM first token via SSE minus direct',
    value: round(overhead, 2),
    unit: 'ms',
    target: { op: '<', value: 5 },
    note: `SSE ${round(sseTtft, 2)} ms, direct ${round(directTtft, 2)}` +
      (sseServer != null ? `; in the node: queue ${round(sseServer.queuedMs, 2)}, accepted→first token ${round(sseServer.firstTokenMs, 2)}, so HTTP and client ${round(sseTtft - sseServer.firstTokenMs, 2)}` : '') +
      `; over direct: WS ${ttftOver('ws')}, OpenAI ${ttftOver('openai')}, LoadedModel in process ${ttftOver('service')}` +
      (overhead < 5 ? '' : `; ${PROFILE_HINT}`),
    detail: {
      medianDifferenceMs: round(overhead, 3),
      sseMedianMs: round(sseTtft, 3),
      directMedianMs: round(directTtft, 3),
      wsOverDirectMs: ttftOver('ws'),
      openaiOverDirectMs: ttftOver('openai'),
      serviceInProcessOverDirectMs: ttftOver('service'),
      server: sseServer
    }
  }))
  return rows
}

/** Medians of the node's own timings over the runs that carry them. */
function serverSplit (runs: Run[]): { queuedMs: number, firstTokenMs: number, totalMs: number } | null {
  const timed = runs.flatMap((run) => run.server != null ? [run.server] : [])
  if (timed.length === 0) return null
  return {
    queuedMs: round(median(timed.map((t) => t.queuedMs)), 3),
    firstTokenMs: round(median(timed.map((t) => t.firstTokenMs)), 3),
    totalMs: round(median(timed.map((t) => t.totalMs)), 2)
  }
}

/**
 * n requests at once on one model (JSON answers), in turns with node-llama-cpp here running
 * min(n, parallel) sequences of the same context at once: what batching gives without the node.
 */
async function concurrency (node: TestNode, model: string, direct: DirectModel): Promise<Metric[]> {
  progress(`llm: aggregate tokens/s with ${CONCURRENCY.join(', ')} requests at once`)
  const rows: Metric[] = []
  try {
    let single = Number.NaN
    for (const n of CONCURRENCY) {
      const rates: number[] = []
      const directRates: number[] = []
      const queued: number[] = []
      const firsts: number[] = []
      const slots = Math.min(n, LLM_DEFAULTS.parallel)
      for (let repeat = 0; repeat < CONCURRENCY_REPEATS; repeat++) {
        const messages = (i: number): Array<{ role: 'user', content: string }> => messagesFor(1000 + 100 * repeat + i)
        let t0 = performance.now()
        const runs = await Promise.all(Array.from({ length: slots }, async (_, i) => await direct.run(messages(i), MAX_TOKENS, i)))
        directRates.push(runs.reduce((sum, run) => sum + run.tokens, 0) / ((performance.now() - t0) / 1000))
        t0 = performance.now()
        const answers = await Promise.all(Array.from({ length: n }, async (_, i) => {
          const { status, body } = await node.api('POST', '/api/v1/llm/chat', { model, messages: messages(i), max_tokens: MAX_TOKENS, temperature: 0 })
          if (status !== 200) throw new Error(`HTTP ${status} ${JSON.stringify(body)}`)
          return body as { usage: { completion_tokens: number }, timings: { queued_ms: number, first_token_ms: number } }
        }))
        rates.push(answers.reduce((sum, answer) => sum + answer.usage.completion_tokens, 0) / ((performance.now() - t0) / 1000))
        for (const answer of answers) {
          queued.push(answer.timings.queued_ms)
          firsts.push(answer.timings.first_token_ms)
        }
      }
      const rate = median(rates)
      const directRate = median(directRates)
      if (n === 1) single = rate
      rows.push(metric({
        id: `llm_aggregate_${n}_tokens_s`,
        name: n === 1 ? 'LLM aggregate tokens/s, 1 request' : `  ${n} requests at once`,
        value: round(rate),
        unit: 'tok/s',
        target: null,
        note: `${n > 1 ? `${round(rate / single, 2)}× one request; ` : ''}direct with ${slots} sequence(s) at once ${round(directRate)} tok/s (${round(rate / directRate, 2)}×)` +
          `${n > LLM_DEFAULTS.parallel ? `; ${n - LLM_DEFAULTS.parallel} wait for a sequence` : ''}; in the node: queue p50 ${round(median(queued), 2)} ms (max ${round(Math.max(...queued))}), first token p50 ${round(median(firsts), 2)} ms; median of ${CONCURRENCY_REPEATS}`,
        detail: { rates: rates.map((r) => round(r)), directRates: directRates.map((r) => round(r)), queuedMs: queued.map((q) => round(q, 2)), firstTokenMs: firsts.map((f) => round(f, 2)) }
      }))
    }
  } catch (err) {
    rows.push(failedMetric('llm_aggregate_tokens_s', 'LLM aggregate tokens/s', 'tok/s', null, err))
  }
  return rows
}

/**
 * B holds no model: asked with `placement: 'peer'` it forwards to A over `/bkg/infer`. Measured
 * against asking A itself, both over SSE, in turns. Left out (no row) while the node does not
 * wire the service to the mesh: B then answers `llm_no_peer` at once.
 */
async function peerFallback (a: TestNode, b: TestNode, model: string): Promise<Metric[]> {
  progress('llm: peer fallback (B without the model → A) vs A directly')
  const probe = await b.api('POST', '/api/v1/llm/chat', { model, messages: messagesFor(0), max_tokens: 1, temperature: 0, placement: 'peer' })
  if (probe.status !== 200) {
    const code = probe.body?.error?.code
    if (code === 'llm_no_peer') {
      const message = String(probe.body.error.message)
      // a node whose service has no mesh says so; one that has not heard A's announcement yet gets a few announcements' time
      const announced = async (): Promise<boolean | undefined> => {
        const { body } = await b.api('GET', '/api/v1/admin/llm/models')
        return (body.mesh as Array<{ id: string }> | undefined)?.some((entry) => entry.id === model)
      }
      const seen = !message.includes('does not take part') && await pollUntil('an announcement of the model on B', announced, ANNOUNCE_WAIT_MS, 200).catch(() => false)
      if (seen !== true) {
        progress(`llm: peer fallback left out: ${message}`)
        return []
      }
    } else {
      return [failedMetric('llm_peer_tokens_ratio', 'LLM tokens/s via a peer / asking it directly', '×', null, new Error(`HTTP ${probe.status} ${JSON.stringify(probe.body)}`))]
    }
  }
  try {
    const viaA = sseClient(a, model)
    const viaB = sseClient(b, model, 'peer')
    const runs: { a: Run[], b: Run[] } = { a: [], b: [] }
    for (let round = 0; round < WARMUP_ROUNDS + PEER_ROUNDS; round++) {
      const messages = messagesFor(500 + round)
      const first = round % 2 === 0 ? 'a' : 'b'
      for (const who of first === 'a' ? ['a', 'b'] as const : ['b', 'a'] as const) {
        const run = await (who === 'a' ? viaA : viaB)(messages, MAX_TOKENS)
        if (run.viaPeer !== (who === 'b')) throw new Error(`node ${who} answered ${run.viaPeer === true ? 'through' : 'without'} a peer`)
        if (round >= WARMUP_ROUNDS) runs[who].push(run)
      }
    }
    const rate = (run: Run): number => run.tokens / (run.totalMs / 1000)
    const ratio = median(runs.b.map(rate)) / median(runs.a.map(rate))
    const perToken = (1000 * (median(runs.b.map((run) => run.totalMs)) - median(runs.a.map((run) => run.totalMs)))) / MAX_TOKENS
    const ttft = median(runs.b.map((run, i) => run.ttftMs - runs.a[i].ttftMs))
    return [
      metric({ id: 'llm_peer_tokens_ratio', name: 'LLM tokens/s via a peer / asking it directly', value: round(ratio, 3), unit: '×', target: null, note: `${round(perToken, 1)} µs more per token (median of ${PEER_ROUNDS} in turns, SSE both ways)`, detail: { perTokenOverheadUs: round(perToken, 2), a: serverSplit(runs.a), b: serverSplit(runs.b) } }),
      metric({ id: 'llm_peer_ttft_overhead_ms', name: '  first token via a peer minus directly', value: round(ttft, 2), unit: 'ms', target: null, note: `via B ${round(median(runs.b.map((run) => run.ttftMs)), 2)} ms, A itself ${round(median(runs.a.map((run) => run.ttftMs)), 2)} ms` })
    ]
  } catch (err) {
    return [failedMetric('llm_peer_tokens_ratio', 'LLM tokens/s via a peer / asking it directly', '×', null, err)]
  }
}

// ---- the direct baseline ----

/**
 * node-llama-cpp in this process, set up as the node sets up a loaded model (CPU, the node's
 * default threads, a context of `parallel` sequences of `contextSize` tokens, the model's chat
 * wrapper) and generating as the node does: the chat prompt tokenized, `sequence.evaluate` pulled
 * token by token, each token detokenized to text.
 */
class DirectModel {
  private readonly model: LlamaModel
  private readonly context: LlamaContext
  private readonly sequences: LlamaContextSequence[]
  private readonly wrapper: ChatWrapper

  private constructor (model: LlamaModel, context: LlamaContext, wrapper: ChatWrapper) {
    this.model = model
    this.context = context
    this.sequences = Array.from({ length: LLM_DEFAULTS.parallel }, () => context.getSequence())
    this.wrapper = wrapper
  }

  /** on the runtime the node uses (getLlama with the CPU build and the node's default threads as the most) */
  static async load (path: string, runtime: LlamaRuntime): Promise<DirectModel> {
    const { resolveChatWrapper } = await import('node-llama-cpp')
    const llama = await runtime.llama()
    const model = await llama.loadModel({ modelPath: path })
    const context = await model.createContext({ contextSize: Math.min(LLM_DEFAULTS.contextSize, model.trainContextSize), sequences: LLM_DEFAULTS.parallel, threads: defaultThreads() })
    return new DirectModel(model, context, resolveChatWrapper(model))
  }

  /** `slot`: which of the context's sequences (several run at once, batched, as in the node) */
  async run (messages: Array<{ role: 'user', content: string }>, maxTokens: number, slot = 0): Promise<Run> {
    const sequence = this.sequences[slot]
    const t0 = performance.now()
    const prompt = this.wrapper.generateContextState({ chatHistory: chatPrompt({ messages }).history }).contextText.tokenize(this.model.tokenizer)
    if (sequence.nextTokenIndex > 0) await sequence.clearHistory()
    const tokens = sequence.evaluate(prompt, { temperature: 0, topK: 40, topP: 0.95, minP: 0.05 })
    const generated: Token[] = []
    let text = ''
    let ttftMs = -1
    try {
      while (generated.length < maxTokens) {
        const next = await tokens.next()
        if (next.done === true) break
        if (ttftMs < 0) ttftMs = performance.now() - t0
        text += this.model.detokenize([next.value], false, generated.slice(-8))
        generated.push(next.value)
      }
    } finally {
      await tokens.return()
    }
    return { ttftMs, totalMs: performance.now() - t0, tokens: generated.length, text }
  }

  async dispose (): Promise<void> {
    await this.context.dispose()
    await this.model.dispose()
  }
}

/** The node's own model code (node/llm/local) in this process: its cost without the node around it. */
async function serviceClient (runtime: LlamaRuntime, path: string, model: PackedTestModel): Promise<{ chat: ChatClient, dispose: () => Promise<void> }> {
  const loaded = await LoadedModel.load({
    id: model.id,
    sha256: model.sha256,
    path,
    parallel: LLM_DEFAULTS.parallel,
    contextSize: LLM_DEFAULTS.contextSize,
    threads: defaultThreads(),
    maxQueued: LLM_DEFAULTS.maxQueued,
    vocabularySize: TEST_MODEL_FACTS.vocabularySize
  }, runtime)
  const observer = { firstToken: () => {}, finished: () => {} }
  const chat: ChatClient = async (messages, maxTokens) => {
    const t0 = performance.now()
    let ttftMs = -1
    for await (const event of loaded.chat({ model: model.id, messages, maxTokens, temperature: 0 }, { servedBy: 'bench', observer })) {
      if (event.type === 'text' && ttftMs < 0) ttftMs = performance.now() - t0
      if (event.type === 'done') {
        const { timings } = event.result
        return { ttftMs, totalMs: performance.now() - t0, tokens: event.result.usage.completionTokens, text: event.result.text, server: { queuedMs: timings.queuedMs, firstTokenMs: timings.firstTokenMs, totalMs: timings.totalMs } }
      }
    }
    throw new Error('the chat ended without done')
  }
  return { chat, dispose: async () => { await loaded.dispose() } }
}

// ---- clients: as little work as the measurement allows (they share the 2 cores with the node) ----

type ChatClient = (messages: Array<{ role: 'user', content: string }>, maxTokens: number) => Promise<Run>

function serverOf (result: { timings: { queued_ms: number, first_token_ms: number, total_ms: number } }): Run['server'] {
  return { queuedMs: result.timings.queued_ms, firstTokenMs: result.timings.first_token_ms, totalMs: result.timings.total_ms }
}

/** `POST /api/v1/llm/chat` answered in one JSON body: no first-token time from outside, the node's own instead. */
function jsonClient (node: TestNode, model: string): ChatClient {
  return async (messages, maxTokens) => {
    const t0 = performance.now()
    const { status, body } = await node.api('POST', '/api/v1/llm/chat', { model, messages, max_tokens: maxTokens, temperature: 0 })
    if (status !== 200) throw new Error(`HTTP ${status} ${JSON.stringify(body)}`)
    return { ttftMs: body.timings.first_token_ms, totalMs: performance.now() - t0, tokens: body.usage.completion_tokens, text: body.text, server: serverOf(body) }
  }
}

/** `POST /api/v1/llm/chat` with `stream: true`: BKG's `event: token` frames, the result in `done`. */
function sseClient (node: TestNode, model: string, placement?: 'peer'): ChatClient {
  return async (messages, maxTokens) => {
    const t0 = performance.now()
    let ttftMs = -1
    let done: any
    await readSse(`${node.url}/api/v1/llm/chat`, node.token, { model, messages, max_tokens: maxTokens, temperature: 0, stream: true, ...(placement != null ? { placement } : {}) }, (frame) => {
      if (ttftMs < 0 && frame.startsWith('event: token')) ttftMs = performance.now() - t0
      else if (frame.startsWith('event: done')) done = JSON.parse(frame.slice(frame.indexOf('data: ') + 6))
      else if (frame.startsWith('event: error')) throw new Error(frame)
    })
    if (done == null) throw new Error('the SSE stream ended without done')
    return { ttftMs, totalMs: performance.now() - t0, tokens: done.usage.completion_tokens, text: done.text, server: serverOf(done), viaPeer: done.via_peer === true }
  }
}

/** `POST /v1/chat/completions` with `stream: true` and usage: `data:` chunks until `[DONE]`. */
function openaiClient (node: TestNode, model: string): ChatClient {
  return async (messages, maxTokens) => {
    const t0 = performance.now()
    let ttftMs = -1
    let tokens = 0
    let text = ''
    await readSse(`${node.url}/v1/chat/completions`, node.token, { model, messages, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }, (frame) => {
      if (frame === 'data: [DONE]') return
      const chunk = JSON.parse(frame.slice(6))
      if (chunk.error != null) throw new Error(JSON.stringify(chunk.error))
      const content = chunk.choices?.[0]?.delta?.content
      if (typeof content === 'string' && content !== '') {
        if (ttftMs < 0) ttftMs = performance.now() - t0
        text += content
      }
      if (chunk.usage != null) tokens = chunk.usage.completion_tokens
    })
    return { ttftMs, totalMs: performance.now() - t0, tokens, text }
  }
}

async function readSse (url: string, token: string, body: unknown, onFrame: (frame: string) => void): Promise<void> {
  const response = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (response.status !== 200 || response.body == null) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`)
  let buffer = ''
  for await (const chunk of response.body.pipeThrough(new TextDecoderStream())) {
    buffer += chunk
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      onFrame(buffer.slice(0, end))
      buffer = buffer.slice(end + 2)
    }
  }
}

/** One WebSocket for all the runs (as the HTTP clients keep their connection alive). */
async function wsClient (node: TestNode, model: string): Promise<{ chat: ChatClient, close: () => void }> {
  const url = `${node.url.replace(/^http/, 'ws')}/api/v1/llm/chat/ws?token=${encodeURIComponent(node.token)}`
  const socket = new WebSocket(url)
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(), { once: true })
    socket.addEventListener('error', () => reject(new Error(`${url}: the WebSocket did not open`)), { once: true })
  })
  let current: ((data: string) => void) | null = null
  socket.addEventListener('message', (event) => current?.(event.data as string))
  const chat: ChatClient = async (messages, maxTokens) => await new Promise<Run>((resolve, reject) => {
    const t0 = performance.now()
    let ttftMs = -1
    current = (data) => {
      if (data.startsWith('{"type":"token"')) {
        if (ttftMs < 0) ttftMs = performance.now() - t0
        return
      }
      const frame = JSON.parse(data)
      if (frame.type === 'done') {
        current = null
        resolve({ ttftMs, totalMs: performance.now() - t0, tokens: frame.result.usage.completion_tokens, text: frame.result.text, server: serverOf(frame.result) })
      } else if (frame.type === 'error') {
        current = null
        reject(new Error(JSON.stringify(frame.error)))
      }
    }
    socket.send(JSON.stringify({ type: 'chat', model, messages, max_tokens: maxTokens, temperature: 0 }))
  })
  return { chat, close: () => socket.close() }
}

interface Clients {
  json: ChatClient
  sse: ChatClient
  ws: ChatClient
  openai: ChatClient
  close: () => void
}

async function openClients (node: TestNode, model: string): Promise<Clients> {
  const ws = await wsClient(node, model)
  return { json: jsonClient(node, model), sse: sseClient(node, model), ws: ws.chat, openai: openaiClient(node, model), close: ws.close }
}

/**
 * CPU the rest of the machine used over a stretch: all busy time minus this process's and its
 * children's (the nodes are children still running, so they are read from /proc one by one).
 */
let nodePids: number[] = []
async function cpuWatch (): Promise<{ foreignPercent: () => Promise<number> }> {
  const ours = async (): Promise<number> => {
    const usage = process.cpuUsage()
    const children = await Promise.all(nodePids.map(async (pid) => await processCpuMs(pid).catch(() => 0)))
    return (usage.user + usage.system) / 1000 + children.reduce((sum, ms) => sum + ms, 0)
  }
  const [machine0, ours0] = [await machineCpuMs(), await ours()]
  return {
    foreignPercent: async () => {
      const [machine1, ours1] = [await machineCpuMs(), await ours()]
      const capacity = machine1.total - machine0.total
      return capacity > 0 ? (100 * Math.max(0, machine1.busy - machine0.busy - (ours1 - ours0))) / capacity : Number.NaN
    }
  }
}

/** A run with the CPU time this process and the node (node A) spent meanwhile, for where the time went. */
async function withCpu (run: () => Promise<Run>): Promise<Run> {
  const node = async (): Promise<number> => nodePids.length > 0 ? await processCpuMs(nodePids[0]) : 0
  const bench0 = process.cpuUsage()
  const node0 = await node()
  const result = await run()
  const bench = process.cpuUsage(bench0)
  return { ...result, cpu: { benchMs: (bench.user + bench.system) / 1000, nodeMs: (await node()) - node0 } }
}

// ---- node helpers ----

/** `bkg model publish FILE --data DIR`, as an operator would. */
async function publish (model: PackedTestModel, node: TestNode): Promise<void> {
  const child = spawn(process.execPath, [CLI_ENTRY, 'model', 'publish', model.path, '--data', node.paths.dir], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
  if (code !== 0) throw new Error(`bkg model publish exited ${code}: ${stderr.trim()}`)
}

/** the node's own figure (`bkg_process_resident_memory_bytes` on /metrics) */
async function rssMiB (node: TestNode): Promise<number> {
  const { body } = await node.api<string>('GET', '/metrics')
  const match = /^bkg_process_resident_memory_bytes (\d+)/m.exec(body)
  if (match == null) throw new Error('no bkg_process_resident_memory_bytes on /metrics')
  return Number(match[1]) / 2 ** 20
}

// `node bench/llm.ts`: these rows alone, without the rest of the bench
if (import.meta.main) {
  const begun = performance.now()
  const tmp = await tempDir('bkg-bench-llm-')
  try {
    const metrics = await measureLlm(tmp.dir)
    const results = fileURLToPath(new URL('./results/', import.meta.url))
    await mkdir(results, { recursive: true })
    await writeFile(join(results, 'llm-latest.json'), JSON.stringify({ timestamp: new Date().toISOString(), durationMs: round(performance.now() - begun), metrics }, null, 2) + '\n')
    process.stdout.write(metricsTable(metrics) + '\n\n')
    process.stdout.write(`${round((performance.now() - begun) / 1000)} s · ${join(results, 'llm-latest.json')}\n`)
  } finally {
    await tmp.remove()
  }
  process.exit(0)
}
