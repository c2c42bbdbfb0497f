// Builds protocols/deid-profile.ts, DICOM PS3.15 Annex E table E.1-1 (Basic Application Level
// Confidentiality Profile and its Options) as data, from the structured parse of the standard
// published by innolitics/dicom-standard:
//   - standard/confidentiality_profile_attributes.json: the rows of E.1-1 (tag, name, actions);
//   - standard/attributes.json: PS3.6 keyword and VR of each tag (to pick a dummy value per VR).
//
// The inputs are pinned by commit and by git blob id (SHA-1 of "blob <size>\0" + content), so the
// generated file names exactly what it was built from and a changed upstream file is refused.
// To move to a newer edition: update SOURCE below (commit, blob ids, edition), run, review the diff.
//
//   node --import tsx scripts/build-deid-profile.ts                 # downloads the pinned files
//   node --import tsx scripts/build-deid-profile.ts --from DIR      # DIR/standard/*.json (a checkout)
//   … --check                                                       # exit 1 if the file would change
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const SOURCE = {
  repository: 'https://github.com/innolitics/dicom-standard',
  // HEAD of master when built; both files are unchanged since 8670abd ("Update standard to rev2024b").
  commit: '7f4749d09ed3ef2fa70637d376d423a4b13523cd',
  profileFile: 'standard/confidentiality_profile_attributes.json',
  profileBlob: 'd4f341cb6e190b3cde305677fd49e6dcea9b6156',
  profileLastChangedIn: '8670abdd9ad16c61af5146ef857899699bdd9c5f',
  attributesFile: 'standard/attributes.json',
  attributesBlob: '354444f3eb5d41ce197c559f5382d6780ff082b6',
  edition: 'DICOM PS3.15 2024b',
  table: 'Table E.1-1 Application Level Confidentiality Profile Attributes',
  license: 'MIT (parse by Innolitics, LLC); the DICOM Standard is © NEMA',
} as const;

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'protocols', 'deid-profile.ts');

// The option columns of E.1-1: the parser's field name → ours.
const OPTION_COLUMNS = [
  ['rtnSafePrivOpt', 'retainSafePrivate'],
  ['rtnUIDsOpt', 'retainUids'],
  ['rtnDevIdOpt', 'retainDeviceIdentity'],
  ['rtnInstIdOpt', 'retainInstitutionIdentity'],
  ['rtnPatCharsOpt', 'retainPatientCharacteristics'],
  ['rtnLongFullDatesOpt', 'retainLongitudinalFullDates'],
  ['rtnLongModifDatesOpt', 'retainLongitudinalModifiedDates'],
  ['cleanDescOpt', 'cleanDescriptors'],
  ['cleanStructContOpt', 'cleanStructuredContent'],
  ['cleanGraphOpt', 'cleanGraphics'],
] as const;

const BASIC_ACTIONS = new Set(['D', 'Z', 'X', 'K', 'C', 'U', 'Z/D', 'X/Z', 'X/D', 'X/Z/D', 'X/Z/U*']);
const OPTION_ACTIONS = new Set(['K', 'C']);

interface SourceRow {
  name: string;
  tag: string;
  stdCompIOD: string;
  basicProfile: string;
  id: string;
  [column: string]: string;
}

interface SourceAttribute {
  id: string;
  keyword: string;
  valueRepresentation: string;
}

function gitBlobId(bytes: Buffer): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

async function load(file: string, blob: string, from: string | undefined): Promise<Buffer> {
  let bytes: Buffer;
  if (from !== undefined) {
    bytes = readFileSync(join(from, file));
  } else {
    const url = `https://raw.githubusercontent.com/innolitics/dicom-standard/${SOURCE.commit}/${file}`;
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    bytes = Buffer.from(await res.arrayBuffer());
  }
  const id = gitBlobId(bytes);
  if (id !== blob) throw new Error(`${file}: git blob ${id}, pinned ${blob}: not the pinned source (update SOURCE deliberately)`);
  return bytes;
}

/** The tag as E.1-1 writes it, normalised: "(0010,0010)", "(50XX,XXXX)", or the private-attributes row. */
function normaliseTag(tag: string): string {
  const t = tag.replace(/\s+/g, ' ').trim().toUpperCase();
  if (/^\([0-9A-FX]{4},[0-9A-FX]{4}\)$/.test(t)) return t;
  if (t === '(GGGG,EEEE) WHERE GGGG IS ODD') return '(gggg,eeee) where gggg is odd';
  throw new Error(`unexpected tag ${JSON.stringify(tag)}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { from: { type: 'string' }, check: { type: 'boolean' } } });
  const rows = JSON.parse((await load(SOURCE.profileFile, SOURCE.profileBlob, values.from)).toString('utf8')) as SourceRow[];
  const attributes = JSON.parse((await load(SOURCE.attributesFile, SOURCE.attributesBlob, values.from)).toString('utf8')) as SourceAttribute[];
  const byId = new Map(attributes.map((a) => [a.id.toLowerCase(), a]));

  const seen = new Set<string>();
  const lines: string[] = [];
  for (const r of [...rows].sort((a, b) => normaliseTag(a.tag).localeCompare(normaliseTag(b.tag)))) {
    const tag = normaliseTag(r.tag);
    if (seen.has(tag)) throw new Error(`duplicate row ${tag}`);
    seen.add(tag);
    if (!BASIC_ACTIONS.has(r.basicProfile)) throw new Error(`${tag}: unknown Basic Profile action ${r.basicProfile}`);
    const attr = byId.get(r.id.toLowerCase());
    const row: Record<string, string | boolean> = {
      tag,
      name: r.name.replace(/\s+/g, ' ').trim(),
      keyword: attr?.keyword ?? '',
      vr: attr?.valueRepresentation ?? '',
      inStdCompIod: r.stdCompIOD === 'Y',
      basic: r.basicProfile,
    };
    for (const [from, to] of OPTION_COLUMNS) {
      const v = r[from];
      if (v === undefined) continue;
      if (!OPTION_ACTIONS.has(v)) throw new Error(`${tag}: unknown ${from} action ${v}`);
      row[to] = v;
    }
    const known = new Set(['name', 'tag', 'stdCompIOD', 'basicProfile', 'id', ...OPTION_COLUMNS.map(([f]) => f)]);
    for (const k of Object.keys(r)) if (!known.has(k)) throw new Error(`${tag}: unknown column ${k} (a new option? map it)`);
    lines.push(`  ${JSON.stringify(row)},`);
  }

  const text = `// GENERATED by scripts/build-deid-profile.ts — do not edit; rebuild from the source instead.
//
// ${SOURCE.edition} Annex E, ${SOURCE.table}: every row, with the
// Basic Profile action and the action of each Option column (K keep, C clean; absent = the Option
// does not touch the attribute). Tags are as the table writes them, including the group wildcards
// (50XX,XXXX), (60XX,3000), (60XX,4000) and the private-attributes row.
//
// Source (the facts of the standard as parsed into JSON; no code is taken from it):
//   repository ${SOURCE.repository}
//   commit     ${SOURCE.commit}
//   file       ${SOURCE.profileFile} (git blob ${SOURCE.profileBlob},
//              last changed in ${SOURCE.profileLastChangedIn}, "Update standard to rev2024b")
//   keyword/VR ${SOURCE.attributesFile} (git blob ${SOURCE.attributesBlob})
//   edition    ${SOURCE.edition}
//   licence    ${SOURCE.license}

/** Basic Profile actions of E.1-1 (PS3.15 E.1.1): D dummy, Z zero-length, X remove, K keep, C clean, U UID; combined ones resolve by IOD type. */
export type DeidBasicAction = 'D' | 'Z' | 'X' | 'K' | 'C' | 'U' | 'Z/D' | 'X/Z' | 'X/D' | 'X/Z/D' | 'X/Z/U*';
export type DeidOptionAction = 'K' | 'C';

export interface DeidProfileRow {
  /** "(gggg,eeee)" upper-case; X marks a wildcard digit; or "(gggg,eeee) where gggg is odd" (private attributes). */
  readonly tag: string;
  readonly name: string;
  /** PS3.6 keyword ('' for the wildcard and private rows). */
  readonly keyword: string;
  /** PS3.6 VR ('' when the table row is not a single attribute). */
  readonly vr: string;
  /** E.1-1 column "In Std. Comp. IOD". */
  readonly inStdCompIod: boolean;
  readonly basic: DeidBasicAction;
  readonly retainSafePrivate?: DeidOptionAction;
  readonly retainUids?: DeidOptionAction;
  readonly retainDeviceIdentity?: DeidOptionAction;
  readonly retainInstitutionIdentity?: DeidOptionAction;
  readonly retainPatientCharacteristics?: DeidOptionAction;
  readonly retainLongitudinalFullDates?: DeidOptionAction;
  readonly retainLongitudinalModifiedDates?: DeidOptionAction;
  readonly cleanDescriptors?: DeidOptionAction;
  readonly cleanStructuredContent?: DeidOptionAction;
  readonly cleanGraphics?: DeidOptionAction;
}

export const DEID_PROFILE_SOURCE = ${JSON.stringify({ ...SOURCE, rows: lines.length }, null, 2)} as const;

export const DEID_PROFILE: readonly DeidProfileRow[] = [
${lines.join('\n')}
];
`;
  if (values.check === true) {
    let old = '';
    try {
      old = readFileSync(OUT, 'utf8');
    } catch {
      // a missing file differs
    }
    if (old !== text) {
      console.error(`${OUT} is out of date: run scripts/build-deid-profile.ts`);
      process.exit(1);
    }
    console.log(`${OUT} is up to date (${lines.length} rows)`);
    return;
  }
  writeFileSync(OUT, text);
  console.log(`wrote ${OUT}: ${lines.length} rows from ${SOURCE.repository}@${SOURCE.commit.slice(0, 7)} (${SOURCE.edition})`);
}

await main();
