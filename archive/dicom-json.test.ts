// The DICOM JSON Model (PS3.18 Annex F) as produced from dcmjs's parsed form.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isUid, lookupAttribute, toDicomJson } from './dicom-json.ts';

test('each VR family in its Annex F form', () => {
  const json = toDicomJson({
    '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane', Ideographic: '', Phonetic: 'do^jein' }] },
    '00080090': { vr: 'PN', Value: [] },
    '00200013': { vr: 'IS', Value: [7] },
    '00181065': { vr: 'DS', Value: [0, 33.3, '12.5'] },
    '00280009': { vr: 'AT', Value: [0x00181065] },
    '00080008': { vr: 'CS', Value: ['ORIGINAL', '', 'AXIAL'] },
    '00200020': { vr: 'CS', Value: [''] },
    '00280010': { vr: 'US', Value: [480] },
    '00082218': { vr: 'SQ', Value: [{ '00080100': { vr: 'SH', Value: ['818981001'] } }] },
    '00081111': { vr: 'SQ', Value: [] },
    '00291010': { vr: 'OB', Value: [new Uint8Array([1, 2, 3, 4]).buffer] },
    '7fe00010': { vr: 'OW', Value: [new Uint8Array([9, 9]).buffer] },
    '7FE00011': { Value: [] } as never,
    '00080000': { vr: 'UL', Value: [120] },
  });
  assert.equal(json['00080000'], undefined, 'no Group Length (F.2.2)');
  assert.deepEqual(json['00100010'], { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane', Phonetic: 'do^jein' }] });
  assert.deepEqual(json['00080090'], { vr: 'PN' }, 'an empty attribute has no Value');
  assert.deepEqual(json['00200013'], { vr: 'IS', Value: [7] }, 'IS as a number');
  assert.deepEqual(json['00181065'], { vr: 'DS', Value: [0, 33.3, 12.5] }, 'DS as numbers');
  assert.deepEqual(json['00280009'], { vr: 'AT', Value: ['00181065'] }, 'AT as 8 hex digits');
  assert.deepEqual(json['00080008'], { vr: 'CS', Value: ['ORIGINAL', null, 'AXIAL'] }, 'an empty value among others is null');
  assert.deepEqual(json['00200020'], { vr: 'CS' });
  assert.deepEqual(json['00280010'], { vr: 'US', Value: [480] });
  assert.deepEqual(json['00082218'], { vr: 'SQ', Value: [{ '00080100': { vr: 'SH', Value: ['818981001'] } }] });
  assert.deepEqual(json['00081111'], { vr: 'SQ' });
  assert.deepEqual(json['00291010'], { vr: 'OB', InlineBinary: 'AQIDBA==' });
  assert.ok('7FE00010' in json, 'tags are upper case');
  assert.equal(json['7FE00011'], undefined, "dcmjs's VR-less placeholder is dropped");
  assert.deepEqual(Object.keys(json), [...Object.keys(json)].sort(), 'in tag order');
});

test('keywords and tags resolve through the data dictionary', () => {
  assert.deepEqual(lookupAttribute('PatientName'), { tag: '00100010', keyword: 'PatientName', vr: 'PN' });
  assert.deepEqual(lookupAttribute('00100010'), { tag: '00100010', keyword: 'PatientName', vr: 'PN' });
  assert.deepEqual(lookupAttribute('0020000d'), { tag: '0020000D', keyword: 'StudyInstanceUID', vr: 'UI' });
  assert.equal(lookupAttribute('PixelData')?.vr, 'OB');
  assert.equal(lookupAttribute('NotAnAttribute'), null);
  assert.equal(lookupAttribute('0019ZZ10'), null);
  assert.equal(lookupAttribute('00191010'), null, 'private tags are not in the dictionary');
});

test('UIDs per PS3.5 9.1', () => {
  for (const ok of ['1.2.840.10008.1.2.1', '2.25.0', '0']) assert.ok(isUid(ok), ok);
  for (const bad of ['', '1..2', '1.02', '1.2.', '.1', '1.2.a', `1.${'2'.repeat(64)}`, '../..']) assert.ok(!isUid(bad), bad);
});
