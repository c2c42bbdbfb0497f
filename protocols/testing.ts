// Assertions on our error taxonomy, shared by the test files of every folder. Test files only.
import assert from 'node:assert/strict';
import { Eco3dError, type ErrorCode } from './errors.ts';

function checkError(err: unknown, code: ErrorCode, message: RegExp | undefined, fragments: readonly string[]): Eco3dError {
  assert.ok(err instanceof Eco3dError, `expected an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (message !== undefined) assert.match(err.message, message);
  for (const f of fragments) assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(f)}`);
  return err;
}

/** `p` rejects with an Eco3dError of `code` (and a message matching `message`); resolves with it. */
export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<Eco3dError> {
  try {
    await p;
  } catch (err) {
    return checkError(err, code, message, []);
  }
  assert.fail(`expected a rejection with ${code}`);
}

/** `fn` throws an Eco3dError of `code` whose message contains every fragment; returns it. */
export function throwsWith(fn: () => unknown, code: ErrorCode, ...fragments: string[]): Eco3dError {
  try {
    fn();
  } catch (err) {
    return checkError(err, code, undefined, fragments);
  }
  assert.fail(`expected a throw with ${code}`);
}
