// The study browser and the reading page: the tenant's studies from QIDO-RS (filters, paging),
// one opened study's Enhanced US Volume (WADO-RS) in the console's vtk.js volume view and MPR
// slices with the calipers, and the report panel. `?study=<Study Instance UID>` opens a study.
import './style.css';
import type { GridMessage } from '../../protocols/volume-stream.ts';
import { canReadStudies, requireAccount, type Account } from './api.ts';
import { Calipers } from './calipers.ts';
import { MprView } from './mpr.ts';
import { formatDicomDate, formatDicomTime, formatPersonName, type StudySummary } from './study-dicom.ts';
import { findVolumeInstance, getStudy, loadVolume, searchStudies, type StudyQuery, type StudyVolume } from './study-dicomweb.ts';
import { ReportPanel } from './study-report.ts';
import { $, el, run, setText, showError } from './ui.ts';
import { VolumeView, type PresetName, type VolumeSource } from './volume-view.ts';

const PAGE_SIZE = 25;

type StudyState = 'none' | 'loading' | 'loaded' | 'no-volume' | 'error';

function setStudyState(state: StudyState, text: string): void {
  const e = $('study-state');
  e.dataset.state = state;
  e.textContent = text;
}

const patientText = (s: StudySummary): string => formatPersonName(s.patientName) || '(no name)';
const dateText = (s: StudySummary): string => `${formatDicomDate(s.studyDate) || '—'}${s.studyTime === '' ? '' : ` ${formatDicomTime(s.studyTime)}`}`;

async function main(): Promise<void> {
  let me: Account;
  try {
    me = await requireAccount(canReadStudies);
  } catch (e) {
    showError(e, 'studies');
    if ((e as { code?: string }).code === 'ECO3D_ERR_FORBIDDEN') setStudyState('error', 'this account cannot read studies');
    return;
  }
  setText('who', `${me.username} (${me.role}, ${me.tenantId})`);

  // ---- volume, slices, calipers (as on the console) ----------------------------------------
  const volume = new VolumeView($('volume-view'));
  const preset = $<HTMLSelectElement>('volume-preset');
  preset.addEventListener('change', () => volume.setPreset(preset.value as PresetName));
  const calipers = new Calipers();
  const mpr = new MprView($('mpr'), calipers);
  calipers.onRedraw(() => mpr.redraw());
  const report = new ReportPanel(me);
  calipers.onSaved((list) => report.setMeasurements(list));
  report.onAcquisitionUid((uid) => calipers.setAcquisition(uid));
  // For end-to-end tests and debugging in the devtools console.
  (window as unknown as { eco3d: unknown }).eco3d = { volume, mpr, calipers, report };

  // ---- the study list ------------------------------------------------------------------------
  let query: StudyQuery = { limit: PAGE_SIZE, offset: 0 };
  let openUid: string | null = null;
  let listSeq = 0;

  const filters = (): Omit<StudyQuery, 'limit' | 'offset'> => ({
    patientName: $<HTMLInputElement>('filter-name').value,
    patientId: $<HTMLInputElement>('filter-id').value,
    dateFrom: $<HTMLInputElement>('filter-from').value,
    dateTo: $<HTMLInputElement>('filter-to').value,
  });

  async function list(q: StudyQuery): Promise<void> {
    const seq = ++listSeq;
    setText('page-info', 'searching…', 'muted');
    let studies: StudySummary[];
    try {
      studies = await searchStudies(q);
    } catch (e) {
      if (seq === listSeq) setText('page-info', 'search failed', 'bad');
      throw e;
    }
    if (seq !== listSeq) return;
    query = q;
    $('studies').replaceChildren(...studies.map(row));
    $('study-empty').classList.toggle('hidden', studies.length > 0);
    const first = studies.length === 0 ? q.offset : q.offset + 1;
    setText('page-info', studies.length === 0 ? (q.offset === 0 ? 'no studies' : 'no more studies') : `${first}–${q.offset + studies.length}`, 'muted');
    $<HTMLButtonElement>('page-prev').disabled = q.offset === 0;
    // A full page may have more after it (QIDO-RS gives no total).
    $<HTMLButtonElement>('page-next').disabled = studies.length < q.limit;
  }

  function row(s: StudySummary): HTMLTableRowElement {
    const tr = el(
      'tr',
      { 'data-study-uid': s.studyInstanceUid, tabindex: '0', title: s.studyInstanceUid },
      el('td', {}, patientText(s), el('small', {}, s.patientId || '—')),
      el('td', {}, dateText(s)),
      el('td', {}, s.description || '—', el('small', {}, `${s.modalities.join(', ') || '—'}${s.instances === undefined ? '' : ` · ${s.instances} inst.`}`)),
    );
    tr.classList.toggle('selected', s.studyInstanceUid === openUid);
    const open = (): void => run(() => openStudy(s.studyInstanceUid, s), 'open study');
    tr.addEventListener('click', open);
    tr.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') open();
    });
    return tr;
  }

  $('study-filter').addEventListener('submit', (e) => {
    e.preventDefault();
    run(() => list({ ...filters(), limit: PAGE_SIZE, offset: 0 }), 'search studies');
  });
  $('filter-clear').addEventListener('click', () => {
    for (const id of ['filter-name', 'filter-id', 'filter-from', 'filter-to']) $<HTMLInputElement>(id).value = '';
    run(() => list({ limit: PAGE_SIZE, offset: 0 }), 'search studies');
  });
  $('page-prev').addEventListener('click', () => run(() => list({ ...query, offset: Math.max(0, query.offset - query.limit) }), 'search studies'));
  $('page-next').addEventListener('click', () => run(() => list({ ...query, offset: query.offset + query.limit }), 'search studies'));

  // ---- one study -----------------------------------------------------------------------------
  let openSeq = 0;
  let gridId = 0;

  function showSummary(s: StudySummary | null, uid: string): void {
    $('study-info').classList.remove('hidden');
    setText('study-patient', s === null ? '—' : `${patientText(s)} · ${s.patientId || '—'}`);
    setText('study-description', s?.description || '—');
    setText('study-date', s === null ? '—' : dateText(s));
    setText('study-accession', s?.accessionNumber || '—');
    setText('study-uid', uid);
  }

  async function openStudy(uid: string, summary?: StudySummary): Promise<void> {
    if (uid !== openUid && report.hasUnsavedChanges && !confirm('The report has unsaved changes. Open another study and lose them?')) return;
    const seq = ++openSeq;
    openUid = uid;
    for (const tr of Array.from($('studies').children)) tr.classList.toggle('selected', (tr as HTMLElement).dataset.studyUid === uid);
    const url = new URL(location.href);
    url.searchParams.set('study', uid);
    history.replaceState(null, '', url);
    showSummary(summary ?? null, uid);
    setText('volume-info', '—');
    setStudyState('loading', 'loading…');
    // Our studies are named by their acquisition: the Study Instance UID is the acquisition UID.
    calipers.setAcquisition(uid);
    const stale = (): boolean => seq !== openSeq;

    const reportLoad = report.open(uid);
    const volumeLoad = (async () => {
      if (summary === undefined) {
        const s = await getStudy(uid);
        if (stale()) return;
        if (s === null) {
          setStudyState('error', 'not in the archive');
          throw Object.assign(new Error(`no study ${uid} in the archive`), { code: 'ECO3D_ERR_NOT_FOUND' });
        }
        showSummary(s, uid);
      }
      const instance = await findVolumeInstance(uid);
      if (stale()) return;
      if (instance === null) {
        setStudyState('no-volume', 'this study has no Enhanced US Volume');
        return;
      }
      const progress = $<HTMLProgressElement>('study-progress');
      progress.classList.remove('hidden');
      progress.removeAttribute('value');
      let v: StudyVolume;
      try {
        v = await loadVolume(instance, (got, total) => {
          if (stale()) return;
          if (total !== null) progress.value = got / total;
          setStudyState('loading', `loading the volume… ${(got / 1e6).toFixed(1)}${total === null ? '' : ` of ${(total / 1e6).toFixed(1)}`} MB`);
        });
      } finally {
        if (!stale()) progress.classList.add('hidden');
      }
      if (stale()) return;
      const g = v.geometry;
      const grid: GridMessage = { kind: 'grid', gridId: ++gridId, dims: g.dims, spacingMm: g.spacingMm, originMm: g.originMm, brickSize: 0, acquisitionUid: uid };
      const source: VolumeSource = { grid, voxels: v.voxels };
      volume.follow(source);
      mpr.follow(source);
      setText('volume-info', `${g.dims.join('×')} @ ${g.spacingMm.map((s) => s.toFixed(2)).join('/')} mm${g.frame === 'patient' ? ' (patient frame)' : ''}`);
      setStudyState('loaded', 'loaded');
    })();
    // Both run together; each shows its own failure (the volume's also in the study header).
    const [r, vol] = await Promise.allSettled([reportLoad, volumeLoad]);
    if (vol.status === 'rejected' && !stale()) {
      if ($('study-state').dataset.state !== 'error') setStudyState('error', 'cannot show the volume');
      showError(vol.reason, 'volume');
    }
    if (r.status === 'rejected') throw r.reason;
  }

  const deepLink = new URLSearchParams(location.search).get('study');
  run(() => list(query), 'search studies');
  if (deepLink !== null && deepLink !== '') run(() => openStudy(deepLink), 'open study');
}

main().catch((e: unknown) => showError(e, 'studies'));
