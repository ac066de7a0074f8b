/**
 * The import rules of docs/architecture.md ("Folders and imports"), checked in `npm test`.
 * There are no known exceptions: any violation fails the check.
 */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'a cycle makes two modules one: neither can be understood, tested or replaced alone',
      severity: 'error',
      from: {},
      to: { circular: true }
    },
    {
      name: 'wire-formats-and-ca-stand-alone',
      comment: 'protocols/ and ca/ are libraries the node uses; they never reach back into it (lib/ they may use)',
      severity: 'error',
      from: { path: '^(protocols|ca)/' },
      to: { path: '^(node|test|bench)/' }
    },
    {
      name: 'lib-stands-alone',
      comment: 'lib/ holds general helpers (atomic file writes, Limit, ...) that everything may use; it uses nothing of BKG',
      severity: 'error',
      from: { path: '^lib/' },
      to: { path: '^(node|ca|protocols|bootstrap|test|bench)/' }
    },
    {
      name: 'production-code-never-imports-tests',
      severity: 'error',
      from: { path: '^(node|protocols|ca|lib|bootstrap)/' },
      to: { path: '^(test|bench)/' }
    },
    {
      name: 'folders-through-their-index',
      comment: 'another folder of node/ is entered through its index.ts only: what else is in it is its own business',
      severity: 'error',
      from: { path: '^node/([^/]+)/' },
      to: { path: '^node/([^/]+)/', pathNot: ['^node/$1/', '^node/[^/]+/index\\.ts$'] }
    }
  ],
  options: {
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
    exclude: { path: 'node_modules' }
  }
}
