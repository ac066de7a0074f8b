import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Ed25519PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { expect } from 'vitest'
import { CaError, createNodeCsr, type CaErrorCode } from '../../ca/index.ts'

export const OPENSSL = '/usr/bin/openssl'

export interface OpensslResult { status: number | null, stdout: string, stderr: string }

export function openssl (args: string[], cwd?: string): OpensslResult {
  const res = spawnSync(OPENSSL, args, { cwd, encoding: 'utf8' })
  if (res.error !== undefined) throw res.error
  return { status: res.status, stdout: res.stdout, stderr: res.stderr }
}

export async function makeTempDir (prefix = 'bkg-ca-test-'): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: async () => { await rm(dir, { recursive: true, force: true }) } }
}

export interface TestNode {
  key: Ed25519PrivateKey
  peerId: string
  csrPem: string
  x509KeyPem: string
}

export async function makeNode (name = 'node-1'): Promise<TestNode> {
  const key = await generateKeyPair('Ed25519')
  const { csrPem, x509KeyPem } = await createNodeCsr({ privateKey: key, name })
  return { key, peerId: peerIdFromPrivateKey(key).toString(), csrPem, x509KeyPem }
}

/** Asserts that `fn` throws (or rejects with) a CaError with `code`. */
export async function expectCaError (fn: () => unknown, code: CaErrorCode): Promise<CaError> {
  let thrown: unknown
  try {
    await fn()
  } catch (err) {
    thrown = err
  }
  expect(thrown, `expected CaError ${code}, nothing was thrown`).toBeInstanceOf(CaError)
  const err = thrown as CaError
  expect(err.code, err.message).toBe(code)
  expect(err.message.length).toBeGreaterThan(0)
  return err
}

export function pemToDer (pem: string): Buffer {
  const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '')
  return Buffer.from(b64, 'base64')
}

export function derToPem (der: Uint8Array, label: string): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`
}
