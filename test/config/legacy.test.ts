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
    ['url = "unterminated', /url: cannot read the value/],
  ])('reports %j with its line', (text, message) => {
    const { problems } = parseLegacyConfig(text)
    expect(problems).toHaveLength(1)
    expect(`line ${problems[0]!.line}: ${problems[0]!.message}`).toMatch(message)
  })
})
