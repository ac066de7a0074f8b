import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['bench/results/**'] }),
  {
    files: ['**/*.ts'],
    rules: {
      // a zod schema and its inferred type share one name on purpose (`const X = z…; type X = z.infer<typeof X>`);
      // the type checker refuses real redeclarations
      '@typescript-eslint/no-redeclare': 'off',
      // `void promise` marks work started on purpose without awaiting it (its errors are handled where it is made)
      'no-void': ['error', { allowAsStatement: true }],
      // loops that wait for a flag another async task sets (`while (!stopped) await …`) are how this code polls
      'no-unmodified-loop-condition': 'off',
      // `for await (const _ of stream)` drains; `_`-names say "deliberately unused"
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none', caughtErrors: 'none', ignoreRestSiblings: true, vars: 'all', varsIgnorePattern: '^_' }]
    }
  }
]
