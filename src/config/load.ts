// Finds and reads the configuration: the path given on the command line, then DPXEN_CONFIG,
// then cosmiconfig's search for `dpxen` from the working directory (package.json key,
// .dpxenrc*, dpxen.config.*, DPxen_config.py), then the fixed place in the Data Protector
// client's configuration folder. The original DPxen_config.py is read as it is.
import { existsSync, statSync } from 'node:fs'
import { CONFIG_FILE_CAP, readSmallFile, SmallFileError, smallFileProblem } from '../core/small-file.js'
import { dirname, join, resolve, win32 } from 'node:path'
import { cosmiconfig } from 'cosmiconfig'
import { DpxenError } from '../core/errors.js'
import { parseLegacyConfig } from './legacy.js'
import { parseJsonText, parseYamlText, placeOf, TextError } from './parse.js'
import { validateConfig, type Config } from './schema.js'

/** A configuration with problems: each is reported on its own line. */
export class ConfigError extends DpxenError {
  readonly problems: string[]
  constructor(problems: string[]) {
    super('CONFIG_INVALID', problems[0] ?? 'invalid configuration')
    this.name = 'ConfigError'
    this.problems = problems
  }
}

export interface LoadOptions {
  /** The CONFIG argument of the hook, if any. */
  path?: string
  env?: NodeJS.ProcessEnv
  cwd?: string
  platform?: NodeJS.Platform
  /** A restore: the file's `restore` section applies. */
  forRestore?: boolean
  /** Values from the command line, over the file's. */
  overrides?: Record<string, unknown>
}

export interface Loaded {
  config: Config
  /** Things to tell the operator that do not stop the run. */
  warnings: string[]
}

/** Where Data Protector keeps a client's configuration; dpxen looks in its dpxen folder. */
export function clientConfigDir(platform = process.platform, env = process.env): string {
  if (platform === 'win32')
    return win32.join(env.ProgramData ?? 'C:\\ProgramData', 'OmniBack', 'Config', 'client', 'dpxen')
  return '/etc/opt/omni/client/dpxen'
}

const FIXED_NAMES = ['dpxen.json', 'dpxen.yaml', 'DPxen_config.py']

function legacyLoader(filepath: string, content: string): Record<string, unknown> {
  const { values, problems } = parseLegacyConfig(content)
  if (problems.length)
    throw new ConfigError(problems.map((p) => `config ${filepath}: line ${p.line}: ${p.message}`))
  return values
}

/** A JSON or YAML file's loader: problems with their line and column, keys set twice refused. */
function textLoader(parse: (text: string) => unknown) {
  return (filepath: string, content: string): unknown => {
    try {
      return parse(content)
    } catch (error) {
      if (!(error instanceof TextError)) throw error
      throw new ConfigError(error.problems.map((p) => `config ${filepath}: ${placeOf(p)}: ${p.message}`))
    }
  }
}

const jsonLoader = textLoader(parseJsonText)
const yamlLoader = textLoader(parseYamlText)
/** `.dpxenrc` holds JSON or YAML: JSON when it opens with a brace. */
const noExtLoader = (filepath: string, content: string): unknown =>
  /^\uFEFF?\s*\{/.test(content) ? jsonLoader(filepath, content) : yamlLoader(filepath, content)

function explorer() {
  return cosmiconfig('dpxen', {
    searchStrategy: 'global',
    searchPlaces: [
      'package.json',
      '.dpxenrc',
      '.dpxenrc.json',
      '.dpxenrc.yaml',
      '.dpxenrc.yml',
      '.dpxenrc.js',
      '.dpxenrc.mjs',
      '.dpxenrc.cjs',
      'dpxen.config.js',
      'dpxen.config.mjs',
      'dpxen.config.cjs',
      'dpxen.config.json',
      'DPxen_config.py',
    ],
    loaders: {
      '.py': legacyLoader,
      '.json': jsonLoader,
      '.yaml': yamlLoader,
      '.yml': yamlLoader,
      noExt: noExtLoader,
    },
    cache: false,
  })
}

async function readFile(path: string): Promise<Record<string, unknown>> {
  if (!existsSync(path))
    throw new ConfigError([`config ${path}: not found (check the path given to the hook)`])
  try {
    // A FIFO, a device or a huge file is refused before cosmiconfig reads it.
    const text = readSmallFile(path, CONFIG_FILE_CAP).toString('utf8')
    const result = path.endsWith('.py') ? { config: legacyLoader(path, text) } : await explorer().load(path)
    const config: unknown = result?.config
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new ConfigError([`config ${path}: must hold an object of settings`])
    }
    return config as Record<string, unknown>
  } catch (error) {
    if (error instanceof ConfigError) throw error
    if (error instanceof SmallFileError)
      throw new ConfigError([`config ${path}: cannot be read: ${smallFileProblem(error, CONFIG_FILE_CAP)}`])
    const message = error instanceof Error ? error.message.split('\n')[0]! : String(error)
    throw new ConfigError([
      `config ${path}: cannot be read: ${message.replace(`${path}: `, '').replace(/^JSON Error in [^:]+:\s*/, '')}`,
    ])
  }
}

async function locate(options: LoadOptions): Promise<string> {
  const env = options.env ?? process.env
  if (options.path) return resolve(options.cwd ?? process.cwd(), options.path)
  if (env.DPXEN_CONFIG) return resolve(options.cwd ?? process.cwd(), env.DPXEN_CONFIG)
  const found = await explorer()
    .search(options.cwd ?? process.cwd())
    .catch(() => null)
  if (found?.filepath) return found.filepath
  const dir = clientConfigDir(options.platform, env)
  for (const name of FIXED_NAMES) if (existsSync(join(dir, name))) return join(dir, name)
  throw new ConfigError([
    `no configuration found: give its path as the hook's argument, set DPXEN_CONFIG, or put dpxen.json in ${dir}`,
  ])
}

/** Finds, reads and checks the configuration; throws ConfigError listing every problem. */
export async function loadConfig(options: LoadOptions = {}): Promise<Loaded> {
  const path = await locate(options)
  const raw = await readFile(path)
  const { config, problems } = validateConfig(raw, path, {
    env: options.env ?? process.env,
    platform: options.platform ?? process.platform,
    baseDir: dirname(path),
    ...(options.forRestore ? { forRestore: true } : {}),
    ...(options.overrides ? { overrides: options.overrides } : {}),
  })
  if (!config) throw new ConfigError(problems.map((p) => `config ${path}: ${p}`))
  const warnings: string[] = []
  if (raw.password !== undefined && (options.platform ?? process.platform) !== 'win32') {
    const mode = statSync(path).mode
    if (mode & 0o004) {
      warnings.push(
        `config ${path}: holds a password and is readable by everyone (chmod 600 it, or use passwordFile)`,
      )
    }
  }
  return { config, warnings }
}
