import { readFile } from 'node:fs/promises'
import wabt from 'wabt'

type Features = Parameters<Awaited<ReturnType<typeof wabt>>['parseWat']>[2]

let assembler: ReturnType<typeof wabt> | undefined

/** assembles WebAssembly text into a binary module (wabt, no toolchain needed) */
export async function assemble (text: string, features?: Features): Promise<Uint8Array> {
  assembler ??= wabt()
  const parsed = (await assembler).parseWat('test.wat', text, features)
  try {
    // wabt's validator ignores the features given to the parser (it refuses shared memories even with threads)
    if (features === undefined) parsed.validate()
    // a copy: wabt's buffer is a view into its own heap
    return parsed.toBinary({}).buffer.slice()
  } finally {
    parsed.destroy()
  }
}

/** a module from test/fixtures/wasm/NAME.wat */
export async function fixture (name: string): Promise<Uint8Array> {
  return await assemble(await readFile(new URL(`../../fixtures/wasm/${name}.wat`, import.meta.url), 'utf8'))
}

/** the text form of a binary module, to check what a rewrite produced */
export async function disassemble (bytes: Uint8Array, features?: Features): Promise<string> {
  assembler ??= wabt()
  const read = (await assembler).readWasm(bytes.slice(), { readDebugNames: false, ...features })
  try {
    return read.toText({})
  } finally {
    read.destroy()
  }
}
