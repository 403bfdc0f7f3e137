// The README's configuration key tables, made from FIELDS (npm run docs writes them; a test
// checks they are current).
import { keyTable, type Field } from './fields.js'

const BLOCK = /(<!-- keys: ([a-z ]+?) \(made by [^>]*-->\n)[\s\S]*?(<!-- \/keys -->)/g

/** The text with every key-table block filled with the keys of the groups it names. */
export function fillKeyTables(text: string): string {
  return text.replace(BLOCK, (_all, open: string, groups: string, close: string) => {
    return `${open}${keyTable(groups.split(' ') as Field<unknown>['group'][])}\n${close}`
  })
}
