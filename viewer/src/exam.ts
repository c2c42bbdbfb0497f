// The current exam and its patient at the bedside (GET/PUT /api/exam). Identifiers are masked on
// screen by default: in demo mode the server masks them itself, and "Show identifiers" asks it
// for them in clear (`?reveal=true`, which the server audits); otherwise the panel masks them
// until staff press the button.
import { ApiError, api, getExam, putExam, type Exam, type ExamInput } from './api.ts';
import { $, el, maskId, maskName, run } from './ui.ts';

let exam: Exam | null = null;

/** A scheduled exam from the hospital's RIS (a FHIR ServiceRequest), as GET /api/worklist lists it. */
interface WorklistEntry {
  readonly serviceRequestId: string;
  readonly patientId: string;
  readonly patientName: string;
  readonly birthDate?: string;
  readonly sex?: 'F' | 'M' | 'O';
  readonly description: string;
  readonly accessionNumber: string;
}
let worklist: WorklistEntry[] = [];

/** Fills the picker; picking an entry fills the form (staff still check it and save). */
async function loadWorklist(): Promise<void> {
  worklist = (await api<{ entries: WorklistEntry[] }>('GET', '/api/worklist')).entries;
  const pick = $<HTMLSelectElement>('exam-worklist');
  pick.replaceChildren(
    el('option', { value: '' }, worklist.length === 0 ? '— none scheduled: enter by hand —' : '— enter by hand —'),
    ...worklist.map((w, i) => el('option', { value: String(i) }, `${w.accessionNumber} · ${maskName(w.patientName)} · ${w.description}`)),
  );
}
let revealed = false;

function render(): void {
  const box = $('exam');
  if (exam === null) {
    box.replaceChildren(el('span', { class: 'muted' }, 'no exam set — set one before scanning'));
    box.dataset.state = 'none';
    return;
  }
  const e = exam;
  // Values the server masked are shown as they came; clear ones are masked here unless revealed.
  const clear = revealed || e.masked === true;
  const show = (v: string | null | undefined, mask: (s: string | null | undefined) => string): string => (clear ? v || '—' : mask(v));
  const rows: [string, string][] = [
    ['patient', show(e.patientName, maskName)],
    ['patient ID', show(e.patientId, maskId)],
    ['birth date', show(e.birthDate ?? null, (s) => (s === null || s === undefined || s === '' ? '—' : `${s.slice(0, 4)}-••-••`))],
    ['sex', e.sex ?? '—'],
    ['exam', e.description || '—'],
    ['accession', e.accessionNumber ?? '—'],
  ];
  box.replaceChildren(el('table', { class: 'kv' }, ...rows.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', { 'data-field': k }, v)))));
  box.dataset.state = 'set';
  box.dataset.masked = String(!revealed);
}

export async function loadExam(): Promise<void> {
  exam = await getExam(revealed);
  render();
}

function setRevealed(on: boolean): void {
  revealed = on;
  $('exam-reveal').textContent = on ? 'Hide identifiers' : 'Show identifiers';
  $('exam-reveal').setAttribute('aria-pressed', String(on));
}

export function wireExam(): void {
  const form = $<HTMLFormElement>('exam-form');
  const input = (id: string): HTMLInputElement => $<HTMLInputElement>(id);
  $('exam-reveal').addEventListener('click', () => {
    setRevealed(!revealed);
    render();
    run(
      () =>
        loadExam().catch((e: unknown) => {
          if (e instanceof ApiError && e.code === 'ECO3D_ERR_FORBIDDEN') setRevealed(false);
          render();
          throw e;
        }),
      'exam',
    );
  });
  $('exam-edit').addEventListener('click', () => {
    form.classList.toggle('hidden');
    if (!form.classList.contains('hidden')) {
      input('exam-patient-id').focus();
      run(loadWorklist, 'worklist');
    }
  });
  $<HTMLSelectElement>('exam-worklist').addEventListener('change', (ev) => {
    const w = worklist[Number((ev.target as HTMLSelectElement).value)];
    if (w === undefined) return;
    input('exam-patient-id').value = w.patientId;
    input('exam-patient-name').value = w.patientName;
    input('exam-birth-date').value = w.birthDate ?? '';
    $<HTMLSelectElement>('exam-sex').value = w.sex ?? '';
    input('exam-description').value = w.description.slice(0, 64);
    input('exam-accession').value = w.accessionNumber;
  });
  $('exam-cancel').addEventListener('click', () => form.classList.add('hidden'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const opt = (id: string): string | undefined => {
      const v = input(id).value.trim();
      return v === '' ? undefined : v;
    };
    const body: ExamInput = {
      patientId: input('exam-patient-id').value.trim(),
      patientName: input('exam-patient-name').value.trim(),
      description: input('exam-description').value.trim(),
    };
    const birthDate = opt('exam-birth-date');
    const sex = $<HTMLSelectElement>('exam-sex').value;
    const accessionNumber = opt('exam-accession');
    if (birthDate !== undefined) body.birthDate = birthDate;
    if (sex !== '') body.sex = sex;
    if (accessionNumber !== undefined) body.accessionNumber = accessionNumber;
    run(async () => {
      await putExam(body);
      form.reset();
      form.classList.add('hidden');
      setRevealed(false);
      await loadExam();
      // A new patient: their own consent.
      document.dispatchEvent(new CustomEvent('eco3d:exam-changed'));
    }, 'set exam');
  });
  run(loadExam, 'exam');
}
