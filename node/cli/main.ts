#!/usr/bin/env node
// Entry point: turn on Node's on-disk compile cache before the (large) module graph loads, which
// cuts the start of every later `bkg` process by several hundred milliseconds.
import { enableCompileCache } from 'node:module'

enableCompileCache()
await import('./program.ts')
