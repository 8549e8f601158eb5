// The AsyncAPI project's own parser over a document: every diagnostic printed, and a
// failure when any is an error. Usage: node validate.mjs <asyncapi.json>
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

const text = await readFile(process.argv[2], 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
const errors = diagnostics.filter((d) => d.severity === 0);
console.log(JSON.stringify({
  parsed: document !== undefined,
  errors: errors.map((d) => `${d.path.join('/')}: ${d.message}`),
  others: diagnostics.length - errors.length,
}));
if (document === undefined || errors.length > 0) process.exitCode = 1;
