// The original DPxen_config.py, read without Python.
import { describe, expect, it } from 'vitest'
import { parseLegacyConfig } from '../../src/config/legacy.js'

describe('DPxen_config.py', () => {
  it("reads the white paper's example as written (unquoted url, Mode, True/False, lists)", () => {
    const { values, problems } = parseLegacyConfig(
      [
        'Mode = "online"',
        'url = http://tpc227.company.com',
        'username = "user"',
        'password = "myPassword"',
        'vmName = ["Debian", "vm2"]',
        'debug = True',
        'sr = ""',
      ].join('\n'),
    )
    expect(problems).toEqual([])
    expect(values).toEqual({
      Mode: 'online',
      url: 'http://tpc227.company.com',
      username: 'user',
      password: 'myPassword',
      vmName: ['Debian', 'vm2'],
      debug: true,
      sr: '',
    })
  })

  it('handles comments, single quotes, escapes, None, numbers, lists over several lines, CRLF and a BOM', () => {
    const text =
      '\uFEFF# DPxen configuration\r\nMode = \'allOffline\'  # all of them\r\nvmName = [\r\n  "a # not a comment",\r\n  \'b\',\r\n]\r\nsr = None\r\nconcurrency = 2\r\npassword = "p\\"w"\r\n'
    const { values, problems } = parseLegacyConfig(text)
    expect(problems).toEqual([])
    expect(values).toEqual({
      Mode: 'allOffline',
      vmName: ['a # not a comment', 'b'],
      sr: undefined,
      concurrency: 2,
      password: 'p"w',
    })
  })

  it.each([
    ['vmName = ["a", b c]', /vmName: list item b c: cannot read the value b c/],
    ['this is not python', /line 1: not an assignment/],
    ['password =', /password: has no value/],
    ['url = "unterminated', /url: has an unterminated string/],
    ['sr = b"bytes"', /sr: is a b"…" string, which dpxen does not read/],
    ['sr = f"{x}"', /sr: is a f"…" string/],
    ['sr = "\\N{EM DASH}"', /sr: uses a \\N\{name\} escape/],
    ['sr = "a" "b"', /sr: is not one string/],
    ['sr = "\\x4"', /sr: has a bad \\x escape/],
  ])('reports %j with its line', (text, message) => {
    const { problems } = parseLegacyConfig(text)
    expect(problems).toHaveLength(1)
    expect(`line ${problems[0]!.line}: ${problems[0]!.message}`).toMatch(message)
  })
  it.each([
    ['"p\\x40ss"', 'p@ss'],
    ['"caf\\u00e9"', 'café'],
    ['"a\\101b"', 'aAb'],
    ['"a\\rb"', 'a\rb'],
    ['"\\U0001F600"', '\u{1F600}'],
    ['"tab\\there"', 'tab\there'],
    ['"keep \\q"', 'keep \\q'],
    ["r'C:\\new\\dir'", 'C:\\new\\dir'],
    ['R"a\\"b"', 'a\\"b'],
    ["'''it's'''", "it's"],
    ['"""say "hi\\""""', 'say "hi"'],
    ['u"x\\ty"', 'x\ty'],
  ])('decodes %s as Python does', (literal, expected) => {
    const { values, problems } = parseLegacyConfig(`password = ${literal}`)
    expect(problems).toEqual([])
    expect(values.password).toBe(expected)
  })

  it.each([
    'password = "Sup3rS3cret',
    'password = [1, Sup3r S3cret]',
    'password "Sup3rS3cret"',
    'passwordFile = (Sup3r S3cret)',
  ])('never shows the text of a password line: %s', (text) => {
    const { problems } = parseLegacyConfig(text)
    expect(problems).toHaveLength(1)
    expect(problems[0]!.message).not.toMatch(/Sup3r|S3cret/)
  })
})
