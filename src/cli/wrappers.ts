// What `dpxen setup` writes: the wrapper scripts Data Protector runs (a POSIX shell script on
// Linux, a .cmd batch file on Windows) and a commented configuration skeleton. Each wrapper names
// the node that ran setup, the installed hook and the configuration by absolute path, and sends
// stderr to stdout: Data Protector drops a UNIX script's stderr, so an error there (node missing,
// dpxen moved) would leave only an exit code in the session.
import { VERSION } from '../core/version.js'

/** The hooks a wrapper can start: the executable's file in dist/hooks, and its role. */
export const HOOKS = [
  { name: 'dpxen-pre-exec', file: 'pre-exec.js', role: 'pre-exec of a backup specification' },
  { name: 'dpxen-post-exec', file: 'post-exec.js', role: 'post-exec of a backup specification' },
  { name: 'dpxen-restore-post-exec', file: 'restore-post-exec.js', role: 'post-exec of a restore' },
] as const

/** The line that marks a file as written by setup (a file without it is never overwritten). */
export const MARK = 'written by dpxen setup'

export interface WrapperTarget {
  /** The wrapper's name as Data Protector's Pre-exec / Post-exec field takes it. */
  name: string
  node: string
  hook: string
  config: string
}

/** A POSIX shell word: single-quoted, a quote inside written as '\''. */
function shellWord(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`
}

export function shellWrapper(t: WrapperTarget): string {
  return [
    '#!/bin/sh',
    `# ${t.name}: ${MARK} (dpxen ${VERSION}); \`dpxen setup --remove\` removes it.`,
    '# Data Protector drops the stderr of a UNIX script: join it to stdout, which the session shows.',
    'exec 2>&1',
    `node=${shellWord(t.node)}`,
    `hook=${shellWord(t.hook)}`,
    `DPXEN_CONFIG=${shellWord(t.config)}`,
    'export DPXEN_CONFIG',
    'if [ ! -x "$node" ]; then',
    `  echo "${t.name}: cannot run Node.js at $node (where dpxen setup found it): install Node.js there, or run dpxen setup again with the node to use"`,
    '  exit 127',
    'fi',
    'if [ ! -r "$hook" ]; then',
    `  echo "${t.name}: cannot read $hook: dpxen was moved or removed; install it again and run dpxen setup"`,
    '  exit 127',
    'fi',
    'exec "$node" "$hook" "$@"',
    '',
  ].join('\n')
}

/**
 * A value for `set "NAME=value"` in a batch file: only % is special there (doubled); quotes
 * cannot occur in a Windows path.
 */
function batchValue(text: string): string {
  if (text.includes('"')) throw new Error(`a Windows path cannot hold a double quote: ${text}`)
  return text.replaceAll('%', '%%')
}

/**
 * A .cmd wrapper. Variables are expanded only inside double quotes, so &, |, <, > and
 * parentheses in a path (C:\Program Files (x86)\…) stay literal; no ( ) blocks, which a ) in an
 * expanded path would end.
 */
export function batchWrapper(t: WrapperTarget): string {
  return [
    '@echo off',
    `rem ${t.name}: ${MARK} (dpxen ${VERSION}); "dpxen setup --remove" removes it.`,
    'rem Errors are joined to stdout, which the Data Protector session shows.',
    'setlocal',
    `set "DPXEN_NODE=${batchValue(t.node)}"`,
    `set "DPXEN_HOOK=${batchValue(t.hook)}"`,
    `set "DPXEN_CONFIG=${batchValue(t.config)}"`,
    'if not exist "%DPXEN_NODE%" goto nonode',
    'if not exist "%DPXEN_HOOK%" goto nohook',
    '"%DPXEN_NODE%" "%DPXEN_HOOK%" %* 2>&1',
    'exit /b %ERRORLEVEL%',
    ':nonode',
    `echo ${t.name}: cannot run Node.js at "%DPXEN_NODE%" (where dpxen setup found it): install Node.js there, or run dpxen setup again with the node to use`,
    'exit /b 127',
    ':nohook',
    `echo ${t.name}: cannot read "%DPXEN_HOOK%": dpxen was moved or removed; install it again and run dpxen setup`,
    'exit /b 127',
    '',
  ].join('\r\n')
}

/** The configuration skeleton (YAML, so it can carry comments); never written over a file. */
export function configSkeleton(options: { windows: boolean; configDir: string; backupDir: string }): string {
  const sep = options.windows ? '\\' : '/'
  return [
    `# dpxen configuration, ${MARK} (dpxen ${VERSION}). dpxen's docs/reference.md describes every key.`,
    '# Fill in the pool, the password file and the VMs, then run `dpxen check` as the user Data',
    '# Protector runs the scripts as (UNIX: the session owner, or root with "back up as root";',
    '# Windows: the Inet service account): it says what is missing.',
    '#',
    "# The pool master's XenAPI address. Current XenServer and XCP-ng serve https with a",
    '# self-signed certificate: `dpxen check` prints it and the fingerprint line to add here.',
    'url: https://xenserver.example.com',
    '# fingerprint: ""',
    'username: root',
    '# The password in a file of its own, readable by that user only (or passwordEnv: NAME).',
    `passwordFile: ${JSON.stringify(`${options.configDir}${sep}password`)}`,
    '# online, allOnline: a snapshot is exported, the VMs keep running.',
    '# offline, allOffline: each VM is shut down, exported, and started again if it was running.',
    'mode: online',
    '# The VMs, by name or uuid (the all* modes take every VM, less those in exclude).',
    'vmName:',
    '  - Debian',
    '# The staging folder: VMs are exported into it and Data Protector backs it up. It needs room',
    '# for the largest run, and should be a folder of its own.',
    `backupDir: ${JSON.stringify(options.backupDir)}`,
    '# debug: true writes a debug file into debugDir.',
    'debug: false',
    '',
  ].join(options.windows ? '\r\n' : '\n')
}
