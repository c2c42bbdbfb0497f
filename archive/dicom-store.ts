// The DICOM archive: Part-10 files under a root directory (normally <data>/archive), indexed in
// the database at the study, series and instance levels (store/migrations/0004_archive.sql).
//
// Storing is atomic. The file is written to a temporary name in its target directory, fsynced and
// renamed (the directory fsynced too); then ONE transaction writes the index rows and the
// DicomInstanceStored outbox event. If that transaction fails the file is removed (or, for a
// moved file, put back), so no instance is ever half stored. A crash between the rename and the
// commit leaves an unindexed file, never an index row without its file.
//
// "The same instance". A SOP Instance UID names content, so a second copy under a known UID is
// compared by the SHA-256 of its data set: the bytes after the File Meta Information. A re-send
// whose only differences are in the File Meta (another sender's Implementation Class UID or
// Version Name, Source AE Title, a group length) is the same instance: success, reported
// `duplicate`, nothing rewritten, no second event. Any other difference, a transcoding to another
// transfer syntax included, is a conflict (ECO3D_ERR_CONFLICT, failure reason 0111H "duplicate
// SOP instance") and the stored file stays as it was, byte for byte.
//
// Layouts. `hierarchical` (the default): <root>/<tenant>/<study>/<series>/<SOP UID>.<random>.dcm;
// the unique name means two concurrent stores of one UID never write the same path, and the loser
// of the index race removes only its own file. `content-addressed` (the research data lake):
// <root>/<tenant>/objects/<h0h1>/<h2h3>/<sha256>.dcm, named by the data set hash. The SOP Instance
// UID is inside the data set, so one path is one instance of one tenant: at most one index row
// can point at it. Stores (and deletions) of one path are therefore serialised in this process
// (one process owns the data directory, store/lock.ts): the index is checked again under the
// lock, a file already indexed is never overwritten (its row's offsets describe ITS File Meta),
// and an unindexed one (a crash's leftover) is replaced.
//
// `announce: false` stores without the DicomInstanceStored event: the lake's de-identified copies
// must not be pushed to the hospital's PACS or FHIR server.
//
// deleteStudy (erasure) removes the index rows in one transaction, then the files; a file is only
// removed when no row points at it any more.
//
// The main thread also runs the robot's control loop, so nothing here holds it for long: file
// I/O is asynchronous, a big file's header is read as a growing prefix (never the whole file),
// its hash is computed over a stream, and an in-memory hash of a large buffer yields between
// 4 MiB steps. Pixel data is never parsed on ingest.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import type { DicomInstanceStoredV1 } from '../protocols/events.ts';
import type { Database, Queryable } from '../store/database.ts';
import { insertOutboxEvent } from '../store/outbox.ts';
import { DicomHeaderError, probeHeader, type DicomHeader } from './dicom-header.ts';
import { isUid, jsonNumber, jsonString, toDicomJson, type DicomJsonDataset } from './dicom-json.ts';
import { runQido, type ParsedQido, type QidoLevel, type QidoResult, type QidoScope } from './qido.ts';

/** Who stored an instance (carried in its DicomInstanceStored event). */
export type DicomSource = DicomInstanceStoredV1['source'];

/**
 * Failure Reason (0008,1197) values of a STOW-RS response (PS3.18 Table I.2-2), plus the ones
 * we add for what the table does not name: 0111H (PS3.7 "Duplicate SOP Instance") for a UID
 * already stored with other content, C409H (as dcm4chee) for an instance of another study than
 * the one in the request URL.
 */
export const FAILURE_REASON = {
  processingFailure: 0x0110,
  duplicateSopInstance: 0x0111,
  sopClassNotSupported: 0x0122,
  outOfResources: 0xa700,
  dataSetDoesNotMatchSopClass: 0xa900,
  cannotUnderstand: 0xc000,
  transferSyntaxNotSupported: 0xc122,
  studyInstanceUidMismatch: 0xc409,
} as const;

export interface StoreResult {
  /** `duplicate`: the same data set was already stored under this SOP Instance UID (nothing written). */
  readonly status: 'stored' | 'duplicate';
  readonly studyInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  readonly transferSyntaxUid: string;
  /** Of the stored file (for a duplicate: the one already stored). */
  readonly sizeBytes: number;
  /** SHA-256 (hex) of the data set: the bytes after the File Meta Information. */
  readonly sha256: string;
}

/** One instance of a study, as `studyInstances` lists it. */
export interface InstanceSummary {
  readonly studyInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  readonly transferSyntaxUid: string;
  readonly modality: string | null;
  readonly seriesNumber: number | null;
  readonly instanceNumber: number | null;
  readonly numberOfFrames: number | null;
  readonly sizeBytes: number;
  readonly sha256: string;
  readonly storedAtMs: number;
}

/** What retrieval needs about a stored instance. */
export interface InstanceRecord {
  readonly studyInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  readonly transferSyntaxUid: string;
  /** Absolute path of the file. */
  readonly path: string;
  readonly sizeBytes: number;
  readonly instanceNumber: number | null;
  readonly rows: number | null;
  readonly columns: number | null;
  readonly numberOfFrames: number | null;
  readonly bitsAllocated: number | null;
  readonly pixelData: { readonly offset: number; readonly length: number | null; readonly vr: 'OB' | 'OW'; readonly encapsulated: boolean } | null;
  /** Present when asked for: all of it, or the pixel module's attributes only. */
  readonly metadata?: DicomJsonDataset;
}

/** Where an instance's file goes under the root (see the file's head). */
export type DicomArchiveLayout = 'hierarchical' | 'content-addressed';

export interface DicomArchiveOptions {
  /** Where the files go (normally <data>/archive); created when missing. */
  readonly root: string;
  readonly db: Database;
  /** The clock of the events' occurredAt. Default Date.now. */
  readonly nowMs?: () => number;
  /** Default 'hierarchical'. */
  readonly layout?: DicomArchiveLayout;
  /** Insert a DicomInstanceStored outbox event per stored instance. Default true. */
  readonly announce?: boolean;
}

/** What deleteStudy removed. */
export interface DeletedStudy {
  /** Index rows of instances removed (0 when the study was not there). */
  readonly instances: number;
  /** Their size, as indexed. */
  readonly bytes: number;
}

export interface StoreOptions {
  /** The instance must belong to this study (STOW-RS to /studies/{study}): else C409H. */
  readonly expectedStudyInstanceUid?: string;
}

export interface StoreFileOptions extends StoreOptions {
  /** Rename the file into the archive (same file system) instead of copying it. */
  readonly move: boolean;
  /**
   * @internal The data set hash when the caller already computed it while writing the file
   * (STOW-RS spooling), with the offset it hashed from. Ignored unless that offset is the
   * data set's, as the header shows.
   */
  readonly precomputed?: { readonly sha256: string; readonly fromOffset: number };
}

const TENANT_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const HASH_STEP_BYTES = 4 * 1024 * 1024;
const FIRST_PREFIX_BYTES = 256 * 1024;
const MAX_HEADER_BYTES = 256 * 1024 * 1024;

// Study- and series-level attributes kept with their row (PS3.4 C.6.1.1.2-4 keys and what the
// QIDO-RS study/series answers show, Tables 10.6.3-3/-4), as first received.
const STUDY_TAGS = [
  '00080005', // Specific Character Set
  '00080020', // Study Date
  '00080030', // Study Time
  '00080050', // Accession Number
  '00080051', // Issuer of Accession Number Sequence
  '00080090', // Referring Physician's Name
  '00080201', // Timezone Offset From UTC
  '00081030', // Study Description
  '00081060', // Name of Physician(s) Reading Study
  '00100010', // Patient's Name
  '00100020', // Patient ID
  '00100021', // Issuer of Patient ID
  '00100030', // Patient's Birth Date
  '00100040', // Patient's Sex
  '00101010', // Patient's Age
  '00101020', // Patient's Size
  '00101030', // Patient's Weight
  '0020000D', // Study Instance UID
  '00200010', // Study ID
];
const SERIES_TAGS = [
  '00080021', // Series Date
  '00080031', // Series Time
  '00080060', // Modality
  '0008103E', // Series Description
  '00180015', // Body Part Examined
  '0020000E', // Series Instance UID
  '00200011', // Series Number
  '00200060', // Laterality
  '00400244', // Performed Procedure Step Start Date
  '00400245', // Performed Procedure Step Start Time
  '00400275', // Request Attributes Sequence
];

// The Image Pixel module and what rendering reads (windows, rescale, the shared functional groups).
const PIXEL_TAGS = ['00280002', '00280004', '00280006', '00280008', '00280010', '00280011', '00280100', '00280101', '00280102', '00280103', '00281050', '00281051', '00281052', '00281053', '52009229'];

/** Thrown to roll back when a concurrent store indexed the same SOP Instance UID first. */
class LostIndexRace extends Error {}

export class DicomArchive {
  readonly root: string;
  readonly #db: Database;
  readonly layout: DicomArchiveLayout;
  readonly #announce: boolean;
  readonly #nowMs: () => number;
  readonly #knownDirs = new Set<string>();
  /** Per file path: the tail of the chain of operations on it (content-addressed stores, deletions). */
  readonly #pathLocks = new Map<string, Promise<void>>();

  constructor(options: DicomArchiveOptions) {
    // Absolute, so that the paths it hands out do not depend on the working directory.
    this.root = resolve(options.root);
    this.#db = options.db;
    this.#nowMs = options.nowMs ?? Date.now;
    this.layout = options.layout ?? 'hierarchical';
    if (this.layout !== 'hierarchical' && this.layout !== 'content-addressed') throw new Eco3dError('ECO3D_ERR_CONFIG', `unknown archive layout ${JSON.stringify(this.layout)}`);
    this.#announce = options.announce ?? true;
  }

  /** The database the index lives in (for the DICOMweb queries). */
  get db(): Database {
    return this.#db;
  }

  /**
   * Stores one Part-10 file held in memory. Failures are Eco3dErrors whose `details.failureReason`
   * is the STOW-RS Failure Reason: ECO3D_ERR_BAD_FILE (not DICOM, truncated: C000H),
   * ECO3D_ERR_INVALID_RESOURCE (required attributes missing or bad: A900H), ECO3D_ERR_CONFLICT
   * (UID already stored with other content: 0111H; another study than expected: C409H).
   */
  async storeInstance(tenantId: string, bytes: Uint8Array, source: DicomSource, options: StoreOptions = {}): Promise<StoreResult> {
    checkTenant(tenantId);
    let header: DicomHeader;
    try {
      const probe = probeHeader(bytes, bytes.byteLength);
      if (probe.kind === 'need') throw new DicomHeaderError('truncated');
      header = probe.header;
    } catch (err) {
      throw unreadable(err);
    }
    const parsed = describe(header, options);
    const sha256 = await sha256Chunked(bytes.subarray(header.datasetOffset));
    const finalPath = await this.#finalPath(tenantId, parsed, sha256);
    // Content-addressed: concurrent stores of one content share the final path, not the temporary one.
    const tmp = this.layout === 'content-addressed' ? `${finalPath}.${randomBytes(6).toString('hex')}.tmp` : `${finalPath}.tmp`;
    // The look-up for an existing copy runs while the temporary file is written and synced:
    // a duplicate (rare) then costs a discarded write, a new instance (the rule) one wait less.
    const [existing, written] = await Promise.allSettled([this.#existing(tenantId, parsed.sopInstanceUid, sha256), writeDurably(tmp, bytes)]);
    if (existing.status === 'rejected' || existing.value !== null) {
      if (written.status === 'fulfilled') await unlink(tmp).catch(() => undefined);
      if (existing.status === 'rejected') throw existing.reason;
      return existing.value!;
    }
    if (written.status === 'rejected') throw written.reason;
    return this.#placeAndIndex(tenantId, parsed, finalPath, async () => {
      const again = this.layout === 'content-addressed' ? await this.#existing(tenantId, parsed.sopInstanceUid, sha256).catch(async (err: unknown) => {
        await unlink(tmp).catch(() => undefined);
        throw err;
      }) : null;
      if (again !== null) {
        await unlink(tmp).catch(() => undefined);
        return { duplicate: again };
      }
      await renameDurably(tmp, finalPath);
      return {
        file: { path: finalPath, sizeBytes: bytes.byteLength, sha256, source },
        undo: async () => {
          await unlink(finalPath).catch(() => undefined);
        },
      };
    });
  }

  /**
   * Stores a Part-10 file from disk without loading it: the header is read as a growing prefix,
   * the hash over a stream. `move` renames the file into the archive (it must be on the same file
   * system; else it is copied and then removed); without it the file is copied and left alone.
   * Failures as storeInstance; when one happens the source file is where it was.
   */
  async storeFile(tenantId: string, path: string, source: DicomSource, options: StoreFileOptions): Promise<StoreResult> {
    checkTenant(tenantId);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw new Eco3dError('ECO3D_ERR_BAD_FILE', `cannot open ${path}: ${(err as Error).message}`, { cause: err, details: { failureReason: FAILURE_REASON.cannotUnderstand, file: path } });
    }
    let header: DicomHeader;
    let sizeBytes: number;
    try {
      sizeBytes = (await fh.stat()).size;
      header = await readHeaderFromFile(fh, sizeBytes);
      // Whatever wrote the file may not have flushed it; a moved file is never rewritten.
      if (options.move) await fh.sync();
    } catch (err) {
      throw err instanceof Eco3dError ? err : unreadable(err);
    } finally {
      await fh.close();
    }
    const parsed = describe(header, options);
    const sha256 =
      options.precomputed !== undefined && options.precomputed.fromOffset === header.datasetOffset
        ? options.precomputed.sha256
        : await sha256OfFile(path, header.datasetOffset);
    const existing = await this.#existing(tenantId, parsed.sopInstanceUid, sha256);
    if (existing !== null) return existing;

    const finalPath = await this.#finalPath(tenantId, parsed, sha256);
    let afterCommit: (() => Promise<void>) | undefined;
    const result = await this.#placeAndIndex(tenantId, parsed, finalPath, async () => {
      // Content-addressed: checked again under the path's lock (see the file's head).
      const again = this.layout === 'content-addressed' ? await this.#existing(tenantId, parsed.sopInstanceUid, sha256) : null;
      if (again !== null) return { duplicate: again };
      const file = { path: finalPath, sizeBytes, sha256, source };
      if (options.move && (await renameIfSameFs(path, finalPath))) {
        await syncDir(dirname(finalPath));
        return {
          file,
          undo: async () => {
            await rename(finalPath, path).catch(() => undefined);
          },
        };
      }
      const tmp = this.layout === 'content-addressed' ? `${finalPath}.${randomBytes(6).toString('hex')}.tmp` : `${finalPath}.tmp`;
      await copyFile(path, tmp);
      const out = await open(tmp, 'r+');
      try {
        await out.sync();
      } finally {
        await out.close();
      }
      await renameDurably(tmp, finalPath);
      // The source is removed only once the copy is indexed; a failure to remove it loses nothing.
      if (options.move) afterCommit = () => unlink(path).catch(() => undefined);
      return {
        file,
        undo: async () => {
          await unlink(finalPath).catch(() => undefined);
        },
      };
    });
    if (afterCommit !== undefined) await afterCommit();
    return result;
  }

  /**
   * Removes a study of a tenant: its index rows (instances, series, study) in one transaction,
   * then its files (and, in the hierarchical layout, its emptied directories, which are named by
   * UID). For an erasure request. Idempotent: a study that is not there gives zeros. A file that
   * cannot be removed once its rows are gone is ECO3D_ERR_INTERNAL naming it (details.paths).
   */
  async deleteStudy(tenantId: string, studyInstanceUid: string): Promise<DeletedStudy> {
    checkTenant(tenantId);
    // It names a directory too: nothing but a UID (none other can have been stored).
    if (!isUid(studyInstanceUid)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `study ${JSON.stringify(studyInstanceUid)} is not a UID`);
    const removed = await this.#deleteStudyRows(tenantId, studyInstanceUid);
    const left: string[] = [];
    for (const r of removed) {
      const path = this.#absolute(r.file_path);
      await this.#exclusive(path, async () => {
        // Content-addressed: the same instance may have been stored again since the commit.
        const back = await this.#db.query('SELECT 1 FROM dicom_instances WHERE tenant_id = $1 AND sop_instance_uid = $2 AND file_path = $3', [tenantId, r.sop_instance_uid, r.file_path]);
        if (back.length > 0) return;
        try {
          await unlink(path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') left.push(path);
        }
      });
    }
    if (this.layout === 'hierarchical') {
      const studyDir = join(this.root, tenantId, studyInstanceUid);
      for (const dir of [...new Set(removed.map((r) => join(studyDir, r.series_uid))), studyDir]) {
        this.#knownDirs.delete(dir);
        // Only when empty: a store into the study (or series) racing this leaves them in place.
        await rmdir(dir).catch(() => undefined);
      }
    }
    if (left.length > 0) {
      throw new Eco3dError('ECO3D_ERR_INTERNAL', `study ${studyInstanceUid}: the index rows are deleted, but ${left.length} file(s) could not be removed`, { details: { paths: left } });
    }
    return { instances: removed.length, bytes: removed.reduce((s, r) => s + Number(r.size_bytes), 0) };
  }

  /** deleteStudy's transaction: the rows it removed from dicom_instances. */
  async #deleteStudyRows(tenantId: string, studyInstanceUid: string): Promise<{ sop_instance_uid: string; series_uid: string; file_path: string; size_bytes: number }[]> {
    // A store into this study committing meanwhile makes a delete fail on a foreign key (PostgreSQL;
    // PGlite runs one statement at a time): then it is run again, and removes that instance too.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#db.transaction(async (tx) => {
          // Locks the study row: two deletions of one study run one after the other.
          await tx.query('SELECT 1 FROM dicom_studies WHERE tenant_id = $1 AND study_uid = $2 FOR UPDATE', [tenantId, studyInstanceUid]);
          const rows = await tx.query<{ sop_instance_uid: string; series_uid: string; file_path: string; size_bytes: number }>(
            'DELETE FROM dicom_instances WHERE tenant_id = $1 AND study_uid = $2 RETURNING sop_instance_uid, series_uid, file_path, size_bytes',
            [tenantId, studyInstanceUid],
          );
          await tx.query('DELETE FROM dicom_series WHERE tenant_id = $1 AND study_uid = $2', [tenantId, studyInstanceUid]);
          await tx.query('DELETE FROM dicom_studies WHERE tenant_id = $1 AND study_uid = $2', [tenantId, studyInstanceUid]);
          return rows;
        });
      } catch (err) {
        if (pgCode(err) !== '23503' || attempt >= 3) throw err;
      }
    }
  }

  /** Absolute path of an instance's file, or null when the tenant has no such instance. */
  async instanceFile(tenantId: string, sopInstanceUid: string): Promise<string | null> {
    const rows = await this.#db.query<{ file_path: string }>('SELECT file_path FROM dicom_instances WHERE tenant_id = $1 AND sop_instance_uid = $2', [tenantId, sopInstanceUid]);
    return rows[0] === undefined ? null : this.#absolute(rows[0].file_path);
  }

  /** The study's instances (series number, then instance number); empty for an unknown study. */
  async studyInstances(tenantId: string, studyInstanceUid: string): Promise<InstanceSummary[]> {
    const rows = await this.#db.query<SummaryRow>(
      `SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, se.modality, se.series_number,
              i.instance_number, i.number_of_frames, i.size_bytes, i.sha256, i.stored_at
         FROM dicom_instances i JOIN dicom_series se ON se.tenant_id = i.tenant_id AND se.series_uid = i.series_uid
        WHERE i.tenant_id = $1 AND i.study_uid = $2
        ORDER BY se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_instance_uid`,
      [tenantId, studyInstanceUid],
    );
    return rows.map((r) => ({
      studyInstanceUid: r.study_uid,
      seriesInstanceUid: r.series_uid,
      sopInstanceUid: r.sop_instance_uid,
      sopClassUid: r.sop_class_uid,
      transferSyntaxUid: r.transfer_syntax_uid,
      modality: r.modality,
      seriesNumber: r.series_number,
      instanceNumber: r.instance_number,
      numberOfFrames: r.number_of_frames,
      sizeBytes: Number(r.size_bytes),
      sha256: r.sha256,
      storedAtMs: r.stored_at.getTime(),
    }));
  }

  /**
   * The instances of a study, optionally narrowed to a series and an instance, in series then
   * instance order; empty when the tenant has none there.
   */
  async findInstances(tenantId: string, where: { study: string; series?: string; instance?: string }, opts: { metadata?: 'all' | 'pixel'; /** Same as metadata: 'all'. */ withMetadata?: boolean } = {}): Promise<InstanceRecord[]> {
    const params: unknown[] = [tenantId, where.study];
    const metadata =
      opts.metadata === 'all' || opts.withMetadata === true
        ? ', i.metadata'
        : opts.metadata === 'pixel'
          ? `, jsonb_strip_nulls(jsonb_build_object(${PIXEL_TAGS.map((t) => `'${t}', i.metadata->'${t}'`).join(', ')})) AS metadata`
          : '';
    let sql = `SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.file_path, i.size_bytes,
                      i.instance_number, i.pixel_rows, i.pixel_columns, i.number_of_frames, i.bits_allocated,
                      i.pixel_offset, i.pixel_length, i.pixel_vr, i.pixel_encapsulated${metadata}
                 FROM dicom_instances i JOIN dicom_series se ON se.tenant_id = i.tenant_id AND se.series_uid = i.series_uid
                WHERE i.tenant_id = $1 AND i.study_uid = $2`;
    if (where.series !== undefined) {
      params.push(where.series);
      sql += ` AND i.series_uid = $${params.length}`;
    }
    if (where.instance !== undefined) {
      params.push(where.instance);
      sql += ` AND i.sop_instance_uid = $${params.length}`;
    }
    sql += ' ORDER BY se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_instance_uid';
    const rows = await this.#db.query<RecordRow>(sql, params);
    return rows.map((r) => ({
      studyInstanceUid: r.study_uid,
      seriesInstanceUid: r.series_uid,
      sopInstanceUid: r.sop_instance_uid,
      sopClassUid: r.sop_class_uid,
      transferSyntaxUid: r.transfer_syntax_uid,
      path: this.#absolute(r.file_path),
      sizeBytes: Number(r.size_bytes),
      instanceNumber: r.instance_number,
      rows: r.pixel_rows,
      columns: r.pixel_columns,
      numberOfFrames: r.number_of_frames,
      bitsAllocated: r.bits_allocated,
      pixelData:
        r.pixel_offset === null || r.pixel_vr === null
          ? null
          : { offset: Number(r.pixel_offset), length: r.pixel_length === null ? null : Number(r.pixel_length), vr: r.pixel_vr, encapsulated: r.pixel_encapsulated === true },
      ...(r.metadata === undefined ? {} : { metadata: r.metadata }),
    }));
  }

  /**
   * A QIDO-RS search in a tenant (archive/qido.ts); `baseUrl` is the DICOMweb root for RetrieveURLs.
   * With `allowedStudyUids`, only those studies (and their series and instances) can match.
   */
  search(tenantId: string, level: QidoLevel, scope: QidoScope, query: ParsedQido, baseUrl: string, allowedStudyUids?: Iterable<string>): Promise<QidoResult> {
    return runQido(this.#db, tenantId, level, scope, query, baseUrl, allowedStudyUids);
  }

  // --- internals ------------------------------------------------------------------------------

  async #existing(tenantId: string, sopInstanceUid: string, sha256: string): Promise<StoreResult | null> {
    const rows = await this.#db.query<ExistingRow>(
      'SELECT study_uid, series_uid, sop_class_uid, transfer_syntax_uid, size_bytes, sha256 FROM dicom_instances WHERE tenant_id = $1 AND sop_instance_uid = $2',
      [tenantId, sopInstanceUid],
    );
    const row = rows[0];
    if (row === undefined) return null;
    if (row.sha256 !== sha256) {
      throw storeError(
        'ECO3D_ERR_CONFLICT',
        `SOP Instance ${sopInstanceUid} is already stored with different content (data set SHA-256 ${row.sha256.slice(0, 12)}…, this copy ${sha256.slice(0, 12)}…); the stored instance is kept unchanged`,
        FAILURE_REASON.duplicateSopInstance,
        { sopInstanceUid, sopClassUid: row.sop_class_uid },
      );
    }
    return {
      status: 'duplicate',
      studyInstanceUid: row.study_uid,
      seriesInstanceUid: row.series_uid,
      sopInstanceUid,
      sopClassUid: row.sop_class_uid,
      transferSyntaxUid: row.transfer_syntax_uid,
      sizeBytes: Number(row.size_bytes),
      sha256,
    };
  }

  async #finalPath(tenantId: string, p: ParsedInstance, sha256: string): Promise<string> {
    const contentAddressed = this.layout === 'content-addressed';
    const dir = contentAddressed ? join(this.root, tenantId, 'objects', sha256.slice(0, 2), sha256.slice(2, 4)) : join(this.root, tenantId, p.studyInstanceUid, p.seriesInstanceUid);
    if (!this.#knownDirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      this.#knownDirs.add(dir);
    }
    return join(dir, contentAddressed ? `${sha256}.dcm` : `${p.sopInstanceUid}.${randomBytes(6).toString('hex')}.dcm`);
  }

  /** Runs `fn` when the previous operations on `path` are done (see the file's head). */
  async #exclusive<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#pathLocks.get(path) ?? Promise.resolve();
    let release!: () => void;
    const tail = previous.then(() => new Promise<void>((r) => (release = r)));
    this.#pathLocks.set(path, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.#pathLocks.get(path) === tail) this.#pathLocks.delete(path);
    }
  }

  /**
   * Puts the file in place (`place`) and indexes it. Content-addressed, both run under the path's
   * lock, and `place` may find the instance indexed meanwhile (a duplicate).
   */
  async #placeAndIndex(
    tenantId: string,
    p: ParsedInstance,
    finalPath: string,
    place: () => Promise<{ duplicate: StoreResult } | { file: { path: string; sizeBytes: number; sha256: string; source: DicomSource }; undo: () => Promise<void> }>,
  ): Promise<StoreResult> {
    const run = async (): Promise<StoreResult> => {
      const placed = await place();
      if ('duplicate' in placed) return placed.duplicate;
      return this.#index(tenantId, p, placed.file, placed.undo);
    };
    return this.layout === 'content-addressed' ? this.#exclusive(finalPath, run) : run();
  }

  #absolute(relativePath: string): string {
    return join(this.root, ...relativePath.split('/'));
  }

  async #index(
    tenantId: string,
    p: ParsedInstance,
    file: { path: string; sizeBytes: number; sha256: string; source: DicomSource },
    undo: () => Promise<void>,
  ): Promise<StoreResult> {
    const rel = relative(this.root, file.path).split(sep).join('/');
    const event: DicomInstanceStoredV1 = {
      type: 'DicomInstanceStored',
      version: 1,
      idempotencyKey: `DicomInstanceStored/${tenantId}/${p.sopInstanceUid}`,
      tenantId,
      occurredAt: new Date(this.#nowMs()).toISOString(),
      studyInstanceUid: p.studyInstanceUid,
      seriesInstanceUid: p.seriesInstanceUid,
      sopInstanceUid: p.sopInstanceUid,
      sopClassUid: p.sopClassUid,
      source: file.source,
    };
    try {
      await this.#db.transaction(async (tx) => {
        const inserted = await insertRows(tx, tenantId, p, { rel, sizeBytes: file.sizeBytes, sha256: file.sha256, source: file.source });
        if (!inserted) throw new LostIndexRace();
        if (this.#announce) await insertOutboxEvent(tx, event);
      });
    } catch (err) {
      await undo();
      if (err instanceof LostIndexRace) {
        // Another store of this UID committed between our check and our insert: same rules.
        const existing = await this.#existing(tenantId, p.sopInstanceUid, file.sha256);
        if (existing !== null) return existing;
      }
      if (err instanceof Eco3dError) throw err;
      if (pgCode(err) === '23503') {
        throw storeError('ECO3D_ERR_NOT_FOUND', `no tenant ${tenantId}`, FAILURE_REASON.processingFailure, { sopInstanceUid: p.sopInstanceUid, sopClassUid: p.sopClassUid });
      }
      throw storeError('ECO3D_ERR_INTERNAL', `indexing SOP Instance ${p.sopInstanceUid} failed: ${(err as Error).message}`, FAILURE_REASON.processingFailure, {
        sopInstanceUid: p.sopInstanceUid,
        sopClassUid: p.sopClassUid,
      });
    }
    return {
      status: 'stored',
      studyInstanceUid: p.studyInstanceUid,
      seriesInstanceUid: p.seriesInstanceUid,
      sopInstanceUid: p.sopInstanceUid,
      sopClassUid: p.sopClassUid,
      transferSyntaxUid: p.transferSyntaxUid,
      sizeBytes: file.sizeBytes,
      sha256: file.sha256,
    };
  }
}

// --- parsing an instance's header into what the index holds ---------------------------------

interface ParsedInstance {
  readonly studyInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  readonly transferSyntaxUid: string;
  readonly datasetOffset: number;
  readonly pixelData: DicomHeader['pixelData'];
  readonly metadata: DicomJsonDataset;
  readonly study: {
    patientName: string | null;
    patientId: string | null;
    patientBirthDate: string | null;
    patientSex: string | null;
    studyDate: string | null;
    studyTime: string | null;
    accessionNumber: string | null;
    studyId: string | null;
    studyDescription: string | null;
    referringPhysicianName: string | null;
    attrs: DicomJsonDataset;
  };
  readonly series: {
    modality: string | null;
    seriesNumber: number | null;
    seriesDescription: string | null;
    ppsStartDate: string | null;
    ppsStartTime: string | null;
    attrs: DicomJsonDataset;
  };
  readonly instance: {
    instanceNumber: number | null;
    rows: number | null;
    columns: number | null;
    numberOfFrames: number | null;
    bitsAllocated: number | null;
  };
}

function describe(header: DicomHeader, options: StoreOptions): ParsedInstance {
  const metadata = toDicomJson(header.dataset);
  const meta = toDicomJson(header.meta);
  const uid = (tag: string, name: string): string => {
    const v = jsonString(metadata, tag);
    if (v === undefined) throw storeError('ECO3D_ERR_INVALID_RESOURCE', `${name} (${tag.slice(0, 4)},${tag.slice(4)}) is missing`, FAILURE_REASON.dataSetDoesNotMatchSopClass, idsOf(metadata));
    if (!isUid(v)) throw storeError('ECO3D_ERR_INVALID_RESOURCE', `${name} ${JSON.stringify(v)} is not a valid UID`, FAILURE_REASON.dataSetDoesNotMatchSopClass, idsOf(metadata));
    return v;
  };
  const sopClassUid = uid('00080016', 'SOP Class UID');
  const sopInstanceUid = uid('00080018', 'SOP Instance UID');
  const studyInstanceUid = uid('0020000D', 'Study Instance UID');
  const seriesInstanceUid = uid('0020000E', 'Series Instance UID');
  const ids = { sopInstanceUid, sopClassUid };
  if (!isUid(header.transferSyntaxUid)) {
    throw storeError('ECO3D_ERR_INVALID_RESOURCE', `Transfer Syntax UID ${JSON.stringify(header.transferSyntaxUid)} is not a valid UID`, FAILURE_REASON.transferSyntaxNotSupported, ids);
  }
  // The File Meta must describe this data set (PS3.10 7.1).
  const metaInstance = jsonString(meta, '00020003');
  if (metaInstance !== undefined && metaInstance !== sopInstanceUid) {
    throw storeError('ECO3D_ERR_INVALID_RESOURCE', `Media Storage SOP Instance UID ${metaInstance} differs from SOP Instance UID ${sopInstanceUid}`, FAILURE_REASON.dataSetDoesNotMatchSopClass, ids);
  }
  const metaClass = jsonString(meta, '00020002');
  if (metaClass !== undefined && metaClass !== sopClassUid) {
    throw storeError('ECO3D_ERR_INVALID_RESOURCE', `Media Storage SOP Class UID ${metaClass} differs from SOP Class UID ${sopClassUid}`, FAILURE_REASON.dataSetDoesNotMatchSopClass, ids);
  }
  if (options.expectedStudyInstanceUid !== undefined && options.expectedStudyInstanceUid !== studyInstanceUid) {
    throw storeError(
      'ECO3D_ERR_CONFLICT',
      `SOP Instance ${sopInstanceUid} belongs to study ${studyInstanceUid}, not to ${options.expectedStudyInstanceUid} named in the request`,
      FAILURE_REASON.studyInstanceUidMismatch,
      ids,
    );
  }
  const s = (tag: string): string | null => jsonString(metadata, tag) ?? null;
  const n = (tag: string): number | null => {
    const v = jsonNumber(metadata, tag);
    return v === undefined || !Number.isInteger(v) || Math.abs(v) > 2147483647 ? null : v;
  };
  return {
    studyInstanceUid,
    seriesInstanceUid,
    sopInstanceUid,
    sopClassUid,
    transferSyntaxUid: header.transferSyntaxUid,
    datasetOffset: header.datasetOffset,
    pixelData: header.pixelData,
    metadata,
    study: {
      patientName: s('00100010'),
      patientId: s('00100020'),
      patientBirthDate: normalizeDate(s('00100030')),
      patientSex: s('00100040'),
      studyDate: normalizeDate(s('00080020')),
      studyTime: normalizeTime(s('00080030')),
      accessionNumber: s('00080050'),
      studyId: s('00200010'),
      studyDescription: s('00081030'),
      referringPhysicianName: s('00080090'),
      attrs: pick(metadata, STUDY_TAGS),
    },
    series: {
      modality: s('00080060'),
      seriesNumber: n('00200011'),
      seriesDescription: s('0008103E'),
      ppsStartDate: normalizeDate(s('00400244')),
      ppsStartTime: normalizeTime(s('00400245')),
      attrs: pick(metadata, SERIES_TAGS),
    },
    instance: {
      instanceNumber: n('00200013'),
      rows: n('00280010'),
      columns: n('00280011'),
      numberOfFrames: n('00280008'),
      bitsAllocated: n('00280100'),
    },
  };
}

function pick(ds: DicomJsonDataset, tags: readonly string[]): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const t of tags) {
    const a = ds[t];
    if (a !== undefined) out[t] = a;
  }
  return out;
}

function idsOf(ds: DicomJsonDataset): { sopInstanceUid?: string; sopClassUid?: string } {
  const sopInstanceUid = jsonString(ds, '00080018');
  const sopClassUid = jsonString(ds, '00080016');
  return { ...(sopInstanceUid === undefined ? {} : { sopInstanceUid }), ...(sopClassUid === undefined ? {} : { sopClassUid }) };
}

/** DA as 8 digits (the ACR-NEMA form YYYY.MM.DD too); other text is kept as it is. */
export function normalizeDate(v: string | null): string | null {
  if (v === null) return null;
  const digits = v.replace(/\./g, '');
  return /^\d{8}$/.test(digits) ? digits : v;
}

/** TM as HHMMSS.FFFFFF (so that ranges compare as text); other text is kept as it is. */
export function normalizeTime(v: string | null): string | null {
  if (v === null) return null;
  const m = /^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$/.exec(v.replace(/:/g, ''));
  if (m === null) return v;
  return `${m[1]}${m[2] ?? '00'}${m[3] ?? '00'}.${(m[4] ?? '').padEnd(6, '0')}`;
}

// --- database rows --------------------------------------------------------------------------

interface ExistingRow {
  study_uid: string;
  series_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  size_bytes: number;
  sha256: string;
}

interface SummaryRow {
  study_uid: string;
  series_uid: string;
  sop_instance_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  modality: string | null;
  series_number: number | null;
  instance_number: number | null;
  number_of_frames: number | null;
  size_bytes: number;
  sha256: string;
  stored_at: Date;
}

interface RecordRow {
  study_uid: string;
  series_uid: string;
  sop_instance_uid: string;
  sop_class_uid: string;
  transfer_syntax_uid: string;
  file_path: string;
  size_bytes: number;
  instance_number: number | null;
  pixel_rows: number | null;
  pixel_columns: number | null;
  number_of_frames: number | null;
  bits_allocated: number | null;
  pixel_offset: number | null;
  pixel_length: number | null;
  pixel_vr: 'OB' | 'OW' | null;
  pixel_encapsulated: boolean | null;
  metadata?: DicomJsonDataset;
}

// The study, series and instance rows in ONE statement (one round trip: PGlite spends about a
// millisecond per statement). The foreign keys between them are checked at the end of the
// statement, when the sibling CTEs' rows exist. Returns whether the instance row was inserted.
async function insertRows(tx: Queryable, tenantId: string, p: ParsedInstance, f: { rel: string; sizeBytes: number; sha256: string; source: DicomSource }): Promise<boolean> {
  const st = p.study;
  const se = p.series;
  const i = p.instance;
  const rows = await tx.query<{ inserted: number; series_study: string | null }>(
    `WITH st AS (
       INSERT INTO dicom_studies (tenant_id, study_uid, patient_name, patient_id, patient_birth_date, patient_sex, study_date, study_time,
         accession_number, study_id, study_description, referring_physician_name, attrs)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)
       ON CONFLICT (tenant_id, study_uid) DO NOTHING
     ), se AS (
       INSERT INTO dicom_series (tenant_id, series_uid, study_uid, modality, series_number, series_description, pps_start_date, pps_start_time, attrs)
       VALUES ($1, $14, $2, $15, $16, $17, $18, $19, $20::jsonb)
       ON CONFLICT (tenant_id, series_uid) DO NOTHING RETURNING study_uid
     ), i AS (
       INSERT INTO dicom_instances (tenant_id, sop_instance_uid, series_uid, study_uid, sop_class_uid, transfer_syntax_uid, instance_number,
         pixel_rows, pixel_columns, number_of_frames, bits_allocated, file_path, size_bytes, sha256, dataset_offset,
         pixel_offset, pixel_length, pixel_vr, pixel_encapsulated, metadata, source)
       VALUES ($1, $21, $14, $2, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37::jsonb, $38::jsonb)
       ON CONFLICT (tenant_id, sop_instance_uid) DO NOTHING RETURNING sop_instance_uid
     )
     SELECT (SELECT count(*) FROM i) AS inserted,
            coalesce((SELECT study_uid FROM se), (SELECT study_uid FROM dicom_series WHERE tenant_id = $1 AND series_uid = $14)) AS series_study`,
    [
      tenantId,
      p.studyInstanceUid,
      st.patientName,
      st.patientId,
      st.patientBirthDate,
      st.patientSex,
      st.studyDate,
      st.studyTime,
      st.accessionNumber,
      st.studyId,
      st.studyDescription,
      st.referringPhysicianName,
      JSON.stringify(st.attrs),
      p.seriesInstanceUid,
      se.modality,
      se.seriesNumber,
      se.seriesDescription,
      se.ppsStartDate,
      se.ppsStartTime,
      JSON.stringify(se.attrs),
      p.sopInstanceUid,
      p.sopClassUid,
      p.transferSyntaxUid,
      i.instanceNumber,
      i.rows,
      i.columns,
      i.numberOfFrames,
      i.bitsAllocated,
      f.rel,
      f.sizeBytes,
      f.sha256,
      p.datasetOffset,
      p.pixelData?.valueOffset ?? null,
      p.pixelData?.length ?? null,
      p.pixelData?.vr ?? null,
      p.pixelData?.encapsulated ?? null,
      JSON.stringify(p.metadata),
      JSON.stringify(f.source),
    ],
  );
  const row = rows[0];
  // The series' study: the new row's, or the existing row's.
  if (row?.series_study !== null && row?.series_study !== undefined && row.series_study !== p.studyInstanceUid) {
    throw storeError(
      'ECO3D_ERR_CONFLICT',
      `Series ${p.seriesInstanceUid} is stored in study ${row.series_study}; SOP Instance ${p.sopInstanceUid} puts it in study ${p.studyInstanceUid}`,
      FAILURE_REASON.processingFailure,
      { sopInstanceUid: p.sopInstanceUid, sopClassUid: p.sopClassUid },
    );
  }
  return Number(row?.inserted ?? 0) === 1;
}

// --- files ----------------------------------------------------------------------------------

async function writeDurably(path: string, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw storeError('ECO3D_ERR_INTERNAL', `cannot write ${path}: ${(err as Error).message}`, isNoSpace(err) ? FAILURE_REASON.outOfResources : FAILURE_REASON.processingFailure, {});
  }
  await fh.close();
}

async function renameDurably(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    await unlink(from).catch(() => undefined);
    throw err;
  }
  await syncDir(dirname(to));
}

// The rename itself is only durable once the directory entry is (POSIX leaves it to fsync(dir)).
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function renameIfSameFs(from: string, to: string): Promise<boolean> {
  try {
    await rename(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EXDEV') return false;
    throw err;
  }
}

async function readHeaderFromFile(fh: FileHandle, sizeBytes: number): Promise<DicomHeader> {
  let want = Math.min(sizeBytes, FIRST_PREFIX_BYTES);
  let buf = Buffer.alloc(0);
  for (;;) {
    if (want > buf.length) {
      const more = Buffer.allocUnsafe(want - buf.length);
      const { bytesRead } = await fh.read(more, 0, more.length, buf.length);
      buf = Buffer.concat([buf, more.subarray(0, bytesRead)]);
      if (bytesRead < more.length) sizeBytes = buf.length; // the file shrank meanwhile: read as is
    }
    const probe = probeHeader(buf, sizeBytes);
    if (probe.kind === 'header') return probe.header;
    if (probe.bytes > MAX_HEADER_BYTES) throw new DicomHeaderError(`the header runs past ${MAX_HEADER_BYTES} bytes before Pixel Data`);
    want = probe.bytes;
  }
}

async function sha256OfFile(path: string, fromOffset: number): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { start: fromOffset, highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function sha256Chunked(bytes: Uint8Array): Promise<string> {
  const h = createHash('sha256');
  for (let off = 0; off < bytes.byteLength; off += HASH_STEP_BYTES) {
    h.update(bytes.subarray(off, off + HASH_STEP_BYTES));
    if (off + HASH_STEP_BYTES < bytes.byteLength) await yieldToLoop();
  }
  return h.digest('hex');
}

// --- errors ---------------------------------------------------------------------------------

function storeError(code: ErrorCode, message: string, failureReason: number, ids: { sopInstanceUid?: string; sopClassUid?: string }): Eco3dError {
  return new Eco3dError(code, message, { details: { failureReason, ...ids } });
}

function unreadable(err: unknown): Eco3dError {
  if (err instanceof Eco3dError) return err;
  const what = err instanceof Error ? err.message : String(err);
  return new Eco3dError('ECO3D_ERR_BAD_FILE', `not a readable DICOM Part-10 file: ${what}`, { cause: err, details: { failureReason: FAILURE_REASON.cannotUnderstand } });
}

/** The STOW-RS Failure Reason of a store failure (0110H "processing failure" when it has none). */
export function failureReasonOf(err: unknown): number {
  if (err instanceof Eco3dError) {
    const r = err.details?.failureReason;
    if (typeof r === 'number') return r;
  }
  return FAILURE_REASON.processingFailure;
}

function checkTenant(tenantId: string): void {
  // The tenant id becomes a directory name: only the slugs tenants are made of.
  if (!TENANT_RE.test(tenantId)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `bad tenant id ${JSON.stringify(tenantId)}`);
}

function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function pgCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}
