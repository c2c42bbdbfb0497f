// Prints the README's error-code table from protocols/errors.ts (the one source of truth).
// `node --import tsx scripts/error-table.ts`
import { ERROR_CODES } from '../protocols/errors.ts';

console.log('| code | HTTP | meaning |');
console.log('|---|---|---|');
for (const [code, { httpStatus, summary }] of Object.entries(ERROR_CODES)) {
  console.log(`| \`${code}\` | ${httpStatus} | ${summary} |`);
}
