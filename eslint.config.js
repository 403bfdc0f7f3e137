import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**'] },
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
  {
    // undici's index costs every hook 80 ms of start-up: the product loads only what it uses.
    files: ['src/**', 'hooks/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'undici',
              message: 'import from src/xapi/undici.ts (start-up time)',
              allowTypeImports: true,
            },
          ],
        },
      ],
    },
  },
  {
    // The simulators stand in for a real host: they must not borrow dpxen's own code.
    files: ['simulator/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/src/**'] }] },
  },
)
