// QIDO-RS query parsing (no database): what is accepted, and the 400s that name their parameter.
// Matching itself runs against a database in dicomweb.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import { parseQido, QIDO_DEFAULT_LIMIT, QIDO_MAX_LIMIT } from './qido.ts';

function refused(query: Record<string, unknown>, param: string, re: RegExp): void {
  assert.throws(
    () => parseQido(query),
    (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_BAD_REQUEST' && e.details?.parameter === param && e.message.includes(`"${param}"`) && re.test(e.message),
    JSON.stringify(query),
  );
}

test('keywords and tags, wildcards, ranges, lists and universal matching are accepted', () => {
  const q = parseQido({
    PatientName: 'Doe*',
    '00100020': 'P-0042',
    StudyDate: '20260101-20261231',
    StudyTime: '10-1130',
    StudyInstanceUID: '1.2.3,1.2.4',
    Modality: '',
    AccessionNumber: '*',
    SeriesNumber: '3',
    InstitutionName: 'Test?Hospital',
  });
  assert.deepEqual(
    q.matches.map((m) => [m.attribute.keyword, m.condition === null ? 'universal' : 'match']),
    [
      ['PatientName', 'match'],
      ['PatientID', 'match'],
      ['StudyDate', 'match'],
      ['StudyTime', 'match'],
      ['StudyInstanceUID', 'match'],
      ['Modality', 'universal'],
      ['AccessionNumber', 'universal'],
      ['SeriesNumber', 'match'],
      ['InstitutionName', 'match'],
    ],
  );
  const time = q.matches.find((m) => m.attribute.keyword === 'StudyTime')!;
  assert.deepEqual(time.values, ['100000.000000', '113059.999999'], 'partial times span what they cover');
  const uids = q.matches.find((m) => m.attribute.keyword === 'StudyInstanceUID')!;
  assert.deepEqual(uids.values, ['1.2.3', '1.2.4']);
  assert.equal(q.limit, QIDO_DEFAULT_LIMIT);
  assert.equal(q.offset, 0);
  assert.equal(q.fuzzy, false);
});

test('date-time bounds span what their prefix covers', () => {
  assert.deepEqual(parseQido({ AcquisitionDateTime: '2026-202603' }).matches[0]!.values, ['20260101000000.000000', '20260331235959.999999']);
  assert.deepEqual(parseQido({ AcquisitionDateTime: '20260310101500.5+0100' }).matches[0]!.values, ['20260310101500.500000', '20260310101500.599999']);
});

test('open-ended date ranges and single dates', () => {
  assert.deepEqual(parseQido({ StudyDate: '-20261231' }).matches[0]!.values, ['20261231']);
  assert.deepEqual(parseQido({ StudyDate: '20260101-' }).matches[0]!.values, ['20260101']);
  assert.deepEqual(parseQido({ StudyDate: '20260229'.replace('2026', '2028') }).matches[0]!.values, ['20280229', '20280229']);
});

test('includefield (list, repeated, all), limit, offset, fuzzymatching', () => {
  const q = parseQido({ includefield: ['00080070', 'InstitutionName,StationName'], limit: '10', offset: '20', fuzzymatching: 'true' });
  assert.deepEqual(q.includeFields.map((f) => f.keyword), ['Manufacturer', 'InstitutionName', 'StationName']);
  assert.equal(q.limit, 10);
  assert.equal(q.offset, 20);
  assert.equal(q.fuzzy, true);
  assert.equal(parseQido({ includefield: 'all' }).includeAll, true);
  const big = parseQido({ limit: String(QIDO_MAX_LIMIT + 1) });
  assert.equal(big.limit, QIDO_MAX_LIMIT);
  assert.match(big.warnings[0]!, /exceeds the maximum/);
  assert.match(parseQido({ emptyvaluematching: 'true' }).warnings[0]!, /emptyvaluematching parameter is not supported/);
});

test('malformed dates and times, unknown attributes and bad parameters are 400 naming the parameter', () => {
  refused({ StudyDate: '2026-01-01' }, 'StudyDate', /malformed date "2026-01-01"/);
  refused({ StudyDate: '20261301' }, 'StudyDate', /no such day/);
  refused({ StudyDate: '20260230' }, 'StudyDate', /no such day/);
  refused({ StudyDate: '2026*' }, 'StudyDate', /malformed date/);
  refused({ StudyDate: '20261231-20260101' }, 'StudyDate', /ends before it starts/);
  refused({ PatientBirthDate: 'yesterday' }, 'PatientBirthDate', /malformed date/);
  refused({ StudyTime: '2561' }, 'StudyTime', /out of range/);
  refused({ StudyTime: 'noon' }, 'StudyTime', /malformed time/);
  refused({ FooBar: 'x' }, 'FooBar', /unknown attribute "FooBar"/);
  refused({ '0011ZZ10': 'x' }, '0011ZZ10', /neither a keyword nor a tag/);
  refused({ '00191010': 'x' }, '00191010', /unknown attribute/);
  refused({ 'ReferencedSeriesSequence.SeriesInstanceUID': '1.2' }, 'ReferencedSeriesSequence.SeriesInstanceUID', /sequence matching/);
  refused({ StudyInstanceUID: '1.2.*' }, 'StudyInstanceUID', /not a UID/);
  refused({ SeriesNumber: 'three' }, 'SeriesNumber', /whole number/);
  refused({ NumberOfStudyRelatedInstances: '3' }, 'NumberOfStudyRelatedInstances', /computed by the server/);
  refused({ PixelData: 'x' }, 'PixelData', /not supported/);
  refused({ PatientName: ['a', 'b'] }, 'PatientName', /more than once/);
  refused({ PatientName: 'a', '00100010': 'b' }, '00100010', /matched twice/);
  refused({ limit: '-1' }, 'limit', /whole number/);
  refused({ offset: 'x' }, 'offset', /whole number/);
  refused({ fuzzymatching: 'yes' }, 'fuzzymatching', /true or false/);
  refused({ includefield: 'NoSuchThing' }, 'includefield', /unknown attribute/);
});
