// The lake's secrets, derived from one master key kept apart from the data: the keyed UID remap
// and per-patient date shift (the same input gives the same output across studies of the
// project), the keyed hash that finds a patient's pseudonym, and the key that encrypts the
// pseudonym table's original patient ids (AES-256-GCM).
//
// The master key comes from ECO3D_LAKE_KEY (hex or base64, ≥ 32 bytes: what a deployment puts in
// its secret store, shared by every process of the lake), else from <data>/keys/lake.key, made
// on first start with mode 0600. It is never in the database, so a database dump alone cannot
// re-identify anyone. Losing it makes the pseudonym table unreadable and breaks UID consistency
// with earlier copies: back it up with the same care as a database password.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Eco3dError } from '../protocols/errors.ts';

export interface LakeKeys {
  /** The keyed UID remap and date shift of protocols/deid.ts. */
  readonly deidKey: Buffer;
  /** HMAC key of patient ids (pseudonym lookup, erasure records). */
  readonly patientHashKey: Buffer;
  /** AES-256-GCM key of the pseudonym table. */
  readonly pseudonymKey: Buffer;
}

const derive = (master: Buffer, info: string): Buffer => Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `eco3d-lake/${info}/v1`, 32));

export function lakeKeysFrom(master: Buffer): LakeKeys {
  if (master.length < 32) throw new Eco3dError('ECO3D_ERR_CONFIG', `the lake master key has ${master.length} bytes; it needs at least 32`);
  return { deidKey: derive(master, 'deid'), patientHashKey: derive(master, 'patient-hash'), pseudonymKey: derive(master, 'pseudonym') };
}

function parseKey(text: string, where: string): Buffer {
  const t = text.trim();
  const bytes = /^[0-9a-fA-F]+$/.test(t) && t.length % 2 === 0 ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
  if (bytes.length < 32) throw new Eco3dError('ECO3D_ERR_CONFIG', `${where}: the lake key must be at least 32 bytes (hex or base64)`);
  return bytes;
}

/** ECO3D_LAKE_KEY when set, else the key file (created on first use). */
export function loadLakeKeys(keyFile: string, env: NodeJS.ProcessEnv = process.env): LakeKeys {
  const fromEnv = env.ECO3D_LAKE_KEY;
  if (fromEnv !== undefined && fromEnv !== '') return lakeKeysFrom(parseKey(fromEnv, 'ECO3D_LAKE_KEY'));
  if (!existsSync(keyFile)) {
    mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
    writeFileSync(keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  }
  chmodSync(keyFile, 0o600);
  return lakeKeysFrom(parseKey(readFileSync(keyFile, 'utf8'), keyFile));
}

/** The keyed hash of a tenant's patient id (hex): finds the pseudonym without decrypting anything. */
export const patientHash = (keys: LakeKeys, tenantId: string, patientId: string): string =>
  createHmac('sha256', keys.patientHashKey).update(`${tenantId}\u0000${patientId.trim()}`).digest('hex');

/** nonce (12) ‖ tag (16) ‖ ciphertext; the tenant is authenticated data (a row moved to another tenant fails). */
export function encryptPatientId(keys: LakeKeys, tenantId: string, patientId: string): Buffer {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', keys.pseudonymKey, nonce);
  c.setAAD(Buffer.from(tenantId));
  const body = Buffer.concat([c.update(patientId, 'utf8'), c.final()]);
  return Buffer.concat([nonce, c.getAuthTag(), body]);
}

export function decryptPatientId(keys: LakeKeys, tenantId: string, blob: Uint8Array): string {
  const b = Buffer.from(blob);
  try {
    const d = createDecipheriv('aes-256-gcm', keys.pseudonymKey, b.subarray(0, 12));
    d.setAAD(Buffer.from(tenantId));
    d.setAuthTag(b.subarray(12, 28));
    return Buffer.concat([d.update(b.subarray(28)), d.final()]).toString('utf8');
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_INTERNAL', 'a pseudonym entry cannot be decrypted with this lake key (another key, or tampered)', { cause: err });
  }
}
