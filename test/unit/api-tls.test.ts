import { describe, expect, it } from 'vitest'
import { decideApiTransport, isLoopbackHost, type ApiTlsSettings } from '../../node/api/tls.ts'

const settings = (over: Partial<ApiTlsSettings> = {}): ApiTlsSettings => ({ enabled: 'auto', insecure: false, adminMtls: false, ...over })

describe('API transport decision', () => {
  it('knows loopback hosts', () => {
    for (const host of ['127.0.0.1', '127.8.9.10', 'localhost', 'LOCALHOST', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) {
      expect(isLoopbackHost(host), host).toBe(true)
    }
    for (const host of ['0.0.0.0', '::', '[::]', '10.0.0.1', '192.168.1.2', '128.0.0.1', 'node1.example', 'localhost.example', '::ffff:10.0.0.1', '2001:db8::1']) {
      expect(isLoopbackHost(host), host).toBe(false)
    }
  })

  it('loopback stays plain HTTP unless TLS is asked for', () => {
    expect(decideApiTransport('127.0.0.1:7070', settings())).toEqual({ tls: false, adminMtls: false, loopback: true })
    expect(decideApiTransport('[::1]:0', settings({ enabled: true }))).toEqual({ tls: true, adminMtls: false, loopback: true })
    expect(decideApiTransport('localhost:7070', settings({ adminMtls: true }))).toEqual({ tls: true, adminMtls: true, loopback: true })
    // --api-insecure changes nothing on loopback
    expect(decideApiTransport('127.0.0.1:7070', settings({ insecure: true }))).toEqual({ tls: false, adminMtls: false, loopback: true })
  })

  it('any other address gets HTTPS by default', () => {
    for (const hostPort of ['0.0.0.0:7070', '[::]:7070', '10.0.0.5:7070', 'node1.example:443']) {
      expect(decideApiTransport(hostPort, settings()), hostPort).toEqual({ tls: true, adminMtls: false, loopback: false })
    }
  })

  it('refuses plain HTTP beyond loopback unless --api-insecure says so', () => {
    expect(() => decideApiTransport('0.0.0.0:7070', settings({ enabled: false }))).toThrow(/refusing to serve the API on 0\.0\.0\.0:7070 over plain HTTP.*--api-insecure/)
    try {
      decideApiTransport('10.0.0.5:7070', settings({ enabled: false }))
    } catch (err) {
      expect((err as { code?: string }).code).toBe('api_tls_required')
    }
    expect(decideApiTransport('0.0.0.0:7070', settings({ insecure: true }))).toEqual({ tls: false, adminMtls: false, loopback: false })
    expect(decideApiTransport('0.0.0.0:7070', settings({ enabled: false, insecure: true }))).toEqual({ tls: false, adminMtls: false, loopback: false })
  })

  it('refuses contradictory settings', () => {
    expect(() => decideApiTransport('127.0.0.1:7070', settings({ enabled: false, adminMtls: true }))).toThrow(/--api-admin-mtls needs TLS/)
    expect(() => decideApiTransport('0.0.0.0:7070', settings({ insecure: true, adminMtls: true }))).toThrow(/--api-admin-mtls needs TLS/)
    expect(() => decideApiTransport('0.0.0.0:7070', settings({ enabled: true, insecure: true }))).toThrow(/--api-tls and --api-insecure/)
  })
})
