// The fast XML-RPC answer parser, against the `xmlrpc` package's serializer and odd inputs.
import { describe, expect, it } from 'vitest'
import { parseResponse, parseValue } from '../../src/core/xml-parse.js'

describe('XML-RPC answer parser', () => {
  it('reads every type, compact or pretty-printed', () => {
    const xml = `<?xml version="1.0"?>
<methodResponse>
  <params><param><value><struct>
    <member><name>s</name><value>a &lt;b&gt; &amp; &quot;c&quot; &#233;&#x263A;</value></member>
    <member><name>typed</name><value><string>x</string></value></member>
    <member><name>empty</name><value></value></member>
    <member><name>empty2</name><value/></member>
    <member><name>estr</name><value><string/></value></member>
    <member><name>i</name><value><int>-42</int></value></member>
    <member><name>i4</name><value><i4>7</i4></value></member>
    <member><name>i8</name><value><i8>4294967296</i8></value></member>
    <member><name>b</name><value><boolean>1</boolean></value></member>
    <member><name>d</name><value><double>1.5</double></value></member>
    <member><name>t</name><value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value></member>
    <member><name>t2</name><value><dateTime.iso8601>2025-03-19T04:16:24</dateTime.iso8601></value></member>
    <member><name>b64</name><value><base64>aGVsbG8=</base64></value></member>
    <member><name>n</name><value><nil/></value></member>
    <member><name>arr</name><value><array><data><value>1</value><value><array><data></data></array></value></data></array></value></member>
    <member><name>st</name><value><struct></struct></value></member>
  </struct></value></param></params>
</methodResponse>
`
    expect(parseResponse(xml)).toEqual({
      s: 'a <b> & "c" é☺',
      typed: 'x',
      empty: '',
      empty2: '',
      estr: '',
      i: -42,
      i4: 7,
      i8: 4294967296,
      b: true,
      d: 1.5,
      t: new Date('2025-03-19T04:16:24Z'),
      t2: new Date('2025-03-19T04:16:24Z'),
      b64: Buffer.from('hello'),
      n: null,
      arr: ['1', []],
      st: {},
    })
  })

  it('reads a bare value (ova.xml, task results)', () => {
    expect(parseValue('<value><array><data><value>OpaqueRef:1</value></data></array></value>')).toEqual([
      'OpaqueRef:1',
    ])
  })

  it.each([
    [
      'a fault',
      '<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>4</int></value></member><member><name>faultString</name><value>no</value></member></struct></value></fault></methodResponse>',
      /XML-RPC fault 4: no/,
    ],
    [
      'an unknown type',
      '<methodResponse><params><param><value><float>1</float></value></param></params></methodResponse>',
      /unknown value type <float>/,
    ],
    [
      'a bad boolean',
      '<methodResponse><params><param><value><boolean>yes</boolean></value></param></params></methodResponse>',
      /bad <boolean>/,
    ],
    [
      'a truncated document',
      '<methodResponse><params><param><value><struct><member><name>a</name>',
      /malformed|expected|unterminated/,
    ],
    [
      'trailing data',
      '<methodResponse><params><param><value>x</value></param></params></methodResponse><x/>',
      /trailing data/,
    ],
    [
      'an unknown entity',
      '<methodResponse><params><param><value>&bogus;</value></param></params></methodResponse>',
      /unknown entity/,
    ],
    ['not XML-RPC at all', '<html><body>500</body></html>', /expected <methodResponse>/],
  ])('rejects %s', (_what, xml, message) => {
    expect(() => parseResponse(xml)).toThrow(message)
  })
})
