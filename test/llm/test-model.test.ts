import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { getLlama, LlamaChatSession, LlamaCompletion, LlamaLogLevel, type Llama, type LlamaContext, type LlamaModel } from 'node-llama-cpp'
import { bufferSource, parseGgufHeader } from '../../node/llm/gguf/gguf-header.ts'
import { TEST_MODEL_FACTS, testModelGguf } from '../../node/llm/gguf/test-model.ts'
import { openPackage, verifyEnvelope, verifyPackageContent } from '../../node/model-packages/index.ts'
import { packTestModel, sha256File, tamperPackage, writeTestModel } from '../helpers/llm.ts'
import { tempDir } from '../helpers/mesh.ts'
import { expectPackageError, makeCa, makeIdentity } from '../models/helpers.ts'

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

describe('the test model', () => {
  describe('bytes', () => {
    it('are the same for the same options, in this process and on any machine', () => {
      const a = testModelGguf()
      expect(Buffer.compare(a, testModelGguf({ seed: 42, contextLength: 2048, weights: 'f16', chatTemplate: 'chatml' }))).toBe(0)
      // pinned: a change here changes every model hash the tests and the devnet see
      expect(sha256(a)).toBe('66fa0d687a739fbd2fd62c98207c0f45179ea53d2585b7fe6ad1a272190e3c2a')
      expect(sha256(testModelGguf({ weights: 'f32' }))).toBe('93ef82e9c970130ba09e1a994dbcbcfe5a2e7cdc4b7aed10e8c36136ba360b23')
    })

    it('differ with the seed; the context length changes only the header', async () => {
      const base = testModelGguf()
      expect(Buffer.compare(base, testModelGguf({ seed: 7 }))).not.toBe(0)
      const longer = testModelGguf({ contextLength: 4096 })
      expect(longer.length).toBe(base.length)
      const { dataOffset } = await parseGgufHeader(bufferSource(base))
      expect(Buffer.compare(longer.subarray(dataOffset), base.subarray(dataOffset))).toBe(0)
    })

    it('are a few hundred KB', () => {
      expect(testModelGguf().length).toBeGreaterThan(200_000)
      expect(testModelGguf().length).toBeLessThan(300_000)
      expect(testModelGguf({ weights: 'f32' }).length).toBeLessThan(500_000)
    })
  })

  describe('in node-llama-cpp', () => {
    let tmp: Awaited<ReturnType<typeof tempDir>>
    let llama: Llama
    let model: LlamaModel
    let context: LlamaContext

    beforeAll(async () => {
      tmp = await tempDir('bkg-test-model-')
      llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.warn })
      model = await llama.loadModel({ modelPath: await writeTestModel(tmp.dir) })
      context = await model.createContext({ contextSize: 512, sequences: 2, threads: 1 })
    })

    afterAll(async () => {
      await context?.dispose()
      await model?.dispose()
      await llama?.dispose()
      await tmp?.remove()
    })

    it('has the stated shape', () => {
      expect(model.embeddingVectorSize).toBe(TEST_MODEL_FACTS.embeddingLength)
      expect(model.trainContextSize).toBe(TEST_MODEL_FACTS.defaultContextLength)
      expect(model.tokens.bos).toBe(TEST_MODEL_FACTS.bos)
      expect(model.tokens.eos).toBe(TEST_MODEL_FACTS.eos)
    })

    it('tokenizes ASCII byte by byte and back', () => {
      const text = 'Hello, world! The quick brown fox: 42 {"a": [1, 2]}\n\ttabs ~end'
      const tokens = model.tokenize(text)
      expect(tokens).toEqual([...Buffer.from(text)])
      expect(model.detokenize(tokens)).toBe(text)
    })

    it('generates printable ASCII, the same every time', async () => {
      const sequence = context.getSequence()
      const completion = new LlamaCompletion({ contextSequence: sequence })
      const generate = async (): Promise<string> => {
        await sequence.clearHistory()
        return await completion.generateCompletion('Once upon a time', { maxTokens: 20, temperature: 0 })
      }
      const text = await generate()
      expect(text).toMatch(/^[\x20-\x7e\n]{20}$/)
      expect(await generate()).toBe(text)
      completion.dispose({ disposeSequence: true })
    })

    it('formats chat with the ChatML wrapper its template names', () => {
      const sequence = context.getSequence()
      const session = new LlamaChatSession({ contextSequence: sequence })
      expect(session.chatWrapper.wrapperName).toBe('ChatML')
      const { contextText } = session.chatWrapper.generateContextState({
        chatHistory: [{ type: 'system', text: 'Be brief.' }, { type: 'user', text: 'Hi' }, { type: 'model', response: [] }]
      })
      expect(contextText.toString()).toContain('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n')
      session.dispose({ disposeSequence: true })
    })
  })

  describe('as a signed package', () => {
    let tmp: Awaited<ReturnType<typeof tempDir>>

    beforeAll(async () => {
      tmp = await tempDir('bkg-test-model-pkg-')
    })

    afterAll(async () => {
      await tmp?.remove()
    })

    it('packs and verifies; a flipped content byte fails the digest check, not the signature', async () => {
      const ca = await makeCa(tmp.dir, 'LLM Operator')
      const publisher = await makeIdentity(ca.caDir, tmp.dir, 'pub', ['publisher', 'member'])
      const packed = await packTestModel({ dir: tmp.dir, publisher: publisher.paths })
      expect(packed).toMatchObject({ id: 'tiny-llama@1.0.0', file: 'tiny-llama.gguf', size: testModelGguf().length, sha256: sha256(testModelGguf()) })
      const opened = await openPackage(packed.path)
      expect(verifyEnvelope(opened.envelope, { caPem: ca.caPem }).manifest.architecture).toBe('llama')
      await verifyPackageContent(packed.path, opened)

      for (const where of ['weights', 'header'] as const) {
        const tampered = await tamperPackage(packed.path, { where, out: packed.path.replace(/\.bkg$/, `-${where}.bkg`) })
        expect(await sha256File(tampered)).not.toBe(await sha256File(packed.path))
        const reopened = await openPackage(tampered)
        verifyEnvelope(reopened.envelope, { caPem: ca.caPem })
        await expectPackageError(async () => await verifyPackageContent(tampered, reopened), 'content_mismatch')
      }
    })
  })
})
