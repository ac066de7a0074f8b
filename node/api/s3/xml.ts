import type { FastifyRequest } from 'fastify'
import type { XMLBuilder, XMLParser } from 'fast-xml-parser'
import { BkgError } from '../../../lib/bkg-error.ts'

/** S3's XML: documents in S3's namespace out, request bodies (CompleteMultipartUpload) in, with a size limit. */
const XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/'
const MAX_XML_BYTES = 1024 * 1024
let codec: Promise<{ builder: XMLBuilder, parser: XMLParser }> | undefined

/** The XML codec, loaded on the first S3 request: a node nobody talks S3 to does not carry it (2.5 MiB). */
async function xmlCodec (): Promise<{ builder: XMLBuilder, parser: XMLParser }> {
  codec ??= import('fast-xml-parser').then(({ XMLBuilder, XMLParser }) => ({
    builder: new XMLBuilder({ ignoreAttributes: false, suppressEmptyNode: false }),
    parser: new XMLParser({ ignoreAttributes: true, parseTagValue: false, isArray: (name) => name === 'Part' })
  }))
  return await codec
}

/** An XML document: the declaration and `body` (one root element). */
export async function xmlDocument (body: Record<string, unknown>): Promise<string> {
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + (await xmlCodec()).builder.build(body)
}

/** A response document in S3's namespace. */
export async function xml (root: string, body: Record<string, unknown>): Promise<string> {
  return await xmlDocument({ [root]: { '@_xmlns': XMLNS, ...body } })
}

/** A request body parsed as XML; MaxMessageLengthExceeded over 1 MiB, MalformedXML when it is not XML. */
export async function readXml (request: FastifyRequest): Promise<any> {
  const parts: Buffer[] = []
  let bytes = 0
  for await (const chunk of (request.body ?? []) as AsyncIterable<Buffer>) {
    bytes += chunk.byteLength
    if (bytes > MAX_XML_BYTES) throw new BkgError('MaxMessageLengthExceeded', 400, 'the XML request body is too large')
    parts.push(chunk)
  }
  try {
    return (await xmlCodec()).parser.parse(Buffer.concat(parts).toString('utf8'))
  } catch {
    throw new BkgError('MalformedXML', 400, 'the XML you provided was not well-formed')
  }
}
