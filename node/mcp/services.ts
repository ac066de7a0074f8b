import type { Principal } from '../auth/index.ts'
import type { EventService } from '../events/index.ts'
import type { LlmApi } from '../llm/index.ts'
import type { ModelService } from '../models/index.ts'
import type { PeerDirectory } from '../peers/index.ts'
import type { SandboxApi } from '../sandbox/index.ts'
import type { StorageService } from '../storage/index.ts'

/**
 * What the MCP tools use of the node's services: the methods the REST routes call, nothing more.
 * Every field is optional: a tool is offered only when the service behind it is given (so
 * `bkg mcp` may serve sandboxes alone, without a p2p host).
 */
export interface McpServices {
  sandboxes?: SandboxApi
  peers?: Pick<PeerDirectory, 'list'>
  models?: Pick<ModelService, 'list' | 'catalogEntries' | 'startPull' | 'waitForJob'>
  events?: Pick<EventService, 'publish' | 'list'>
  llm?: Pick<LlmApi, 'chat' | 'embed' | 'models' | 'servable' | 'meshModels' | 'defaultModel'>
  storage?: { objects: Pick<StorageService['objects'], 'listBuckets' | 'createBucket' | 'list' | 'getObject' | 'read' | 'putObject'> }
}

/**
 * Who calls a tool: the principal of the bearer token (HTTP) or the one `bkg mcp` was started
 * with (stdio), and whether the node's extra admin check (`--api-admin-mtls`: the client
 * certificate) passed, which admin-only tools need on top of the admin token, as admin routes do.
 */
export interface McpCaller {
  principal: Principal
  adminChecked: boolean
}
