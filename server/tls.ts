// TLS material for HTTPS/WSS: the operator's own certificate, or a self-signed one generated
// once and kept in the data directory (so a LAN browser has to trust it only once).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { Eco3dError } from '../protocols/index.ts';
import type { ServerConfig } from './config.ts';

export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
}

export async function loadTls(cfg: ServerConfig, hostNames: readonly string[]): Promise<TlsMaterial | undefined> {
  if (cfg.tls === undefined) return undefined;
  if (cfg.tls !== 'self-signed') {
    try {
      return { cert: readFileSync(cfg.tls.certFile, 'utf8'), key: readFileSync(cfg.tls.keyFile, 'utf8') };
    } catch (err) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `cannot read --tls-cert/--tls-key: ${(err as Error).message}`, { cause: err });
    }
  }
  const dir = join(cfg.dataDir, 'tls');
  const certFile = join(dir, 'self-signed.crt');
  const keyFile = join(dir, 'self-signed.key');
  if (existsSync(certFile) && existsSync(keyFile)) {
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  }
  const pems = await generate([{ name: 'commonName', value: 'eco3d.local' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          ...hostNames.map((h) => (/^[\d.:]+$/.test(h) ? { type: 7 as const, ip: h } : { type: 2 as const, value: h })),
        ],
      },
    ],
  });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(certFile, pems.cert, { mode: 0o644 });
  writeFileSync(keyFile, pems.private, { mode: 0o600 });
  return { cert: pems.cert, key: pems.private };
}
