import js from '@eslint/js'
import tseslint from 'typescript-eslint'

// undici's index costs every hook 80 ms of start-up: the product loads only what it uses.
const UNDICI = {
  name: 'undici',
  message: 'import from src/xapi/undici.ts (start-up time)',
  allowTypeImports: true,
}

/** src/ folder -> the folders it may import from. */
const LAYERS = {
  core: [],
  config: ['core'],
  xapi: ['core', 'config'],
  xva: ['core'],
  staging: ['core', 'config'],
  pool: ['core', 'config', 'xapi', 'staging'],
  hook: ['core', 'config'],
  backup: ['core', 'config', 'xapi', 'xva', 'staging', 'pool', 'hook'],
  restore: ['core', 'config', 'xapi', 'xva', 'staging', 'pool', 'hook'],
  cli: ['core', 'config', 'xapi', 'xva', 'staging', 'pool', 'hook', 'backup', 'restore'],
}

/** simulator/xapi/ folder -> the folders it may import from. */
const SIM_LAYERS = {
  model: [],
  xva: ['model'],
  rpc: ['model', 'xva'],
  http: ['model', 'xva', 'rpc'],
}

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        fetch: 'readonly',
        performance: 'readonly',
        URL: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'error',
    },
  },
  {
    // Only executables and test helpers talk to the terminal directly.
    files: ['hooks/**', 'simulator/*/cli.ts', 'simulator/dp/demo.ts', 'scripts/**', 'test/**'],
    rules: { 'no-console': 'off' },
  },
  // The layers of src/, lowest first: each folder may import only the folders it lists (README,
  // Architecture). An import that runs back up fails the lint.
  ...Object.entries(LAYERS).map(([folder, allowed]) => ({
    files: [`src/${folder}/**`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [UNDICI],
          patterns: [
            {
              group: [
                ...Object.keys(LAYERS).filter((f) => f !== folder && !allowed.includes(f)),
                'hooks',
              ].map((f) => `**/${f}/*`),
              message: `src/${folder}/ may import only from ${allowed.length ? allowed.map((f) => `src/${f}/`).join(', ') : 'itself'} (README: Architecture)`,
            },
          ],
        },
      ],
    },
  })),
  {
    files: ['hooks/**'],
    rules: { 'no-restricted-imports': ['error', { paths: [UNDICI] }] },
  },
  {
    // The simulators stand in for a real host: they must not borrow dpxen's own code.
    files: ['simulator/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/src/**'] }] },
  },
  // xapi-sim's layers: the model (objects, values, disks), the XVA format over it, then the two
  // ways in (XML-RPC methods, HTTP handlers); server.ts and cli.ts put them together.
  ...Object.entries(SIM_LAYERS).map(([folder, allowed]) => ({
    files: [`simulator/xapi/${folder}/**`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['**/src/**'], message: "the simulators must not borrow dpxen's own code" },
            {
              group: [
                ...Object.keys(SIM_LAYERS)
                  .filter((f) => f !== folder && !allowed.includes(f))
                  .map((f) => `**/${f}/*`),
                '**/server.js',
                '**/cli.js',
              ],
              message: `simulator/xapi/${folder}/ may import only from ${allowed.map((f) => `${f}/`).join(', ') || 'itself'} and faults.ts`,
            },
          ],
        },
      ],
    },
  })),
)
