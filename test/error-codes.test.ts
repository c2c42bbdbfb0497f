// The README's error table is a contract: every code we can send must be listed there, and
// nothing listed there may be missing from the code.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERROR_CODES } from '../protocols/errors.ts';

test('README lists every error code, and only real ones', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  for (const code of Object.keys(ERROR_CODES)) assert.ok(readme.includes(`\`${code}\``), `README is missing ${code}`);
  const listed = new Set(readme.match(/ECO3D_ERR_[A-Z_]+/g) ?? []);
  for (const code of listed) assert.ok(code in ERROR_CODES, `README lists unknown code ${code}`);
});
