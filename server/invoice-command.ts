// `eco3d invoice --tenant T --period YYYY-MM`: one tenant's invoice of a month, from the same
// database `eco3d start` uses (the data directory's PGlite, or DATABASE_URL). Prints the issued
// invoice, or the open period's preview; --issue issues it first (idempotent).
//
// PGlite serves one process: while `eco3d start` runs on the data directory, this command stops
// with ECO3D_ERR_DATA_DIR_LOCKED; ask the running server instead
// (GET /api/billing/invoices/T/YYYY-MM?format=…). On PostgreSQL both run side by side.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { issueInvoice, renderInvoice, viewInvoice, type InvoiceFormat, type InvoiceView } from '../billing/index.ts';
import { Eco3dError } from '../protocols/errors.ts';
import { acquireDataDirLock, migrate, openPglite, openPostgres } from '../store/index.ts';
import type { ServerConfig } from './config.ts';

export interface InvoiceCommand {
  readonly tenantId: string;
  readonly period: string;
  readonly format: InvoiceFormat;
  readonly issue: boolean;
  /** Where to write; undefined: stdout. */
  readonly outFile: string | undefined;
}

export async function runInvoice(cfg: ServerConfig, c: InvoiceCommand): Promise<{ status: InvoiceView['status']; number?: string; totalCents: number; outFile?: string }> {
  const lock = cfg.databaseUrl === undefined ? await acquireDataDirLock(cfg.dataDir) : undefined;
  try {
    const db = cfg.databaseUrl === undefined ? await openPglite(join(cfg.dataDir, 'db')) : await openPostgres(cfg.databaseUrl, cfg.databaseSchema === undefined ? {} : { schema: cfg.databaseSchema });
    try {
      await migrate(db);
      if (c.issue) await issueInvoice(db, c.tenantId, c.period, 'cli', Date.now());
      const view = await viewInvoice(db, c.tenantId, c.period);
      const body = await renderInvoice(view, c.format, cfg.publicUrl ?? `http://${cfg.host}:${cfg.port}`);
      if (c.outFile !== undefined) await writeFile(c.outFile, body);
      else if (c.format === 'pdf' && process.stdout.isTTY) throw new Eco3dError('ECO3D_ERR_CONFIG', 'a PDF goes to a file (--out FILE) or a pipe, not the terminal');
      else process.stdout.write(body);
      return {
        status: view.status,
        ...(view.number === undefined ? {} : { number: view.number }),
        totalCents: view.invoice.totals.totalCents,
        ...(c.outFile === undefined ? {} : { outFile: c.outFile }),
      };
    } finally {
      await db.close();
    }
  } finally {
    await lock?.release();
  }
}
