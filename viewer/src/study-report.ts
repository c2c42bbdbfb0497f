// The reading physician's report on a study: findings, conclusion, the measurements it cites
// (picked from the acquisition's saved calipers), Save draft, Sign (physicians), Amend a signed
// version (a new draft linked to it), the status and the version history.
// API: GET/PUT /api/studies/:studyUid/report, POST …/sign, POST …/amend (the server enforces the
// roles; the page only hides what the role cannot do).
import {
  amendReport,
  getReport,
  isSigned,
  saveReportDraft,
  signReport,
  type Account,
  type Measurement,
  type Report,
  type ReportHistory,
  type ReportInput,
} from './api.ts';
import { savedValueText } from './calipers.ts';
import { $, el, fmtTime, run, setText } from './ui.ts';

const STATUS_TEXT: Record<Report['status'], string> = { preliminary: 'preliminary (draft)', final: 'final', amended: 'amended' };

export class ReportPanel {
  private studyUid: string | null = null;
  private history: ReportHistory = { current: null, versions: [] };
  private measurements: readonly Measurement[] = [];
  /** Measurement ids ticked in the form. */
  private picked = new Set<string>();
  /** The form differs from the saved draft. */
  private dirty = false;
  private busy = false;
  private readonly canEdit: boolean;
  private readonly canSign: boolean;
  private onAcquisition: (uid: string) => void = () => {};

  constructor(me: Account) {
    this.canEdit = me.role === 'physician' || me.role === 'sonographer';
    this.canSign = me.role === 'physician';
    $('report-sign').classList.toggle('hidden', !this.canSign);
    $('report-save').classList.toggle('hidden', !this.canEdit);
    for (const id of ['report-findings', 'report-conclusion']) {
      $(id).addEventListener('input', () => this.setDirty(true));
    }
    $('report-measurements').addEventListener('change', (e) => {
      const box = e.target as HTMLInputElement;
      const id = box.dataset.measurementId;
      if (id === undefined) return;
      if (box.checked) this.picked.add(id);
      else this.picked.delete(id);
      this.setDirty(true);
    });
    $('report-save').addEventListener('click', () => this.act(() => this.save(), 'save report'));
    $('report-sign').addEventListener('click', () => this.act(() => this.sign(), 'sign report'));
    $('report-amend').addEventListener('click', () => this.act(() => this.amend(), 'amend report'));
    addEventListener('beforeunload', (e) => {
      if (this.dirty) e.preventDefault();
    });
    this.render();
  }

  /** Unsaved edits in the form. */
  get hasUnsavedChanges(): boolean {
    return this.dirty;
  }

  /** Told the acquisition a report names (its measurements are the ones to pick from). */
  onAcquisitionUid(fn: (uid: string) => void): void {
    this.onAcquisition = fn;
  }

  /** Shows the report of this study (or none). */
  async open(studyUid: string): Promise<void> {
    this.studyUid = studyUid;
    this.history = { current: null, versions: [] };
    this.picked = new Set();
    this.setDirty(false);
    this.render();
    setText('report-note', 'loading the report…', 'muted');
    let h: ReportHistory;
    try {
      h = await getReport(studyUid);
    } catch (e) {
      if (this.studyUid === studyUid) setText('report-note', 'the report could not be loaded', 'bad');
      throw e;
    }
    if (this.studyUid !== studyUid) return;
    this.apply(h);
  }

  /** The acquisition's saved measurements: the pick-list. */
  setMeasurements(list: readonly Measurement[]): void {
    this.measurements = list;
    this.renderMeasurements();
  }

  private apply(h: ReportHistory): void {
    this.history = h;
    const c = h.current;
    $<HTMLTextAreaElement>('report-findings').value = c?.findings ?? '';
    $<HTMLTextAreaElement>('report-conclusion').value = c?.conclusion ?? '';
    this.picked = new Set(c?.measurementIds ?? []);
    this.setDirty(false);
    if (c?.acquisitionUid) this.onAcquisition(c.acquisitionUid);
    this.render();
  }

  private setDirty(on: boolean): void {
    this.dirty = on;
    document.getElementById('report')?.toggleAttribute('data-dirty', on);
  }

  /** Runs one action at a time, the buttons disabled meanwhile. */
  private act(action: () => Promise<void>, context: string): void {
    if (this.busy) return;
    this.busy = true;
    this.render();
    run(
      () =>
        action().finally(() => {
          this.busy = false;
          this.render();
        }),
      context,
    );
  }

  private input(): ReportInput {
    const conclusion = $<HTMLTextAreaElement>('report-conclusion').value.trim();
    // Every ticked id, those the draft cited but the list no longer shows included: the server checks them.
    return { findings: $<HTMLTextAreaElement>('report-findings').value, ...(conclusion === '' ? {} : { conclusion }), measurementIds: [...this.picked] };
  }

  private async save(): Promise<void> {
    const uid = this.requireStudy();
    await saveReportDraft(uid, this.input());
    this.apply(await getReport(uid));
    setText('report-note', 'draft saved', 'ok');
  }

  /** Saves what the form shows (when it changed or there is no draft yet), then signs that draft. */
  private async sign(): Promise<void> {
    const uid = this.requireStudy();
    const c = this.history.current;
    if (this.dirty || c === null || isSigned(c)) {
      if ($<HTMLTextAreaElement>('report-findings').value.trim() === '') throw Object.assign(new Error('write the findings before signing'), { code: 'ECO3D_ERR_BAD_REQUEST' });
      await saveReportDraft(uid, this.input());
    }
    await signReport(uid);
    this.apply(await getReport(uid));
    setText('report-note', 'signed', 'ok');
  }

  private async amend(): Promise<void> {
    const uid = this.requireStudy();
    await amendReport(uid);
    this.apply(await getReport(uid));
    setText('report-note', 'a new draft replaces the signed version once signed', 'muted');
  }

  private requireStudy(): string {
    if (this.studyUid === null) throw Object.assign(new Error('open a study first'), { code: 'ECO3D_ERR_CONFLICT' });
    return this.studyUid;
  }

  private render(): void {
    const c = this.history.current;
    const open = this.studyUid !== null;
    const signed = c !== null && isSigned(c);
    const editable = open && this.canEdit && !signed && !this.busy;

    const status = $('report-status');
    status.dataset.status = c?.status ?? 'none';
    status.dataset.version = c === null ? '' : String(c.version);
    status.textContent = !open ? '—' : c === null ? 'no report yet' : `${STATUS_TEXT[c.status]} · v${c.version}`;
    setText(
      'report-signed',
      c === null
        ? ''
        : signed
          ? `signed by ${c.signedBy ?? '—'} ${fmtTime(c.signedAtMs ?? null)}`
          : `draft by ${c.authoredBy}, ${fmtTime(c.updatedAtMs)}${c.replacesId ? ` — amends v${this.versionOf(c.replacesId) ?? '?'}` : ''}`,
    );
    for (const id of ['report-findings', 'report-conclusion']) $<HTMLTextAreaElement>(id).disabled = !editable;
    $<HTMLButtonElement>('report-save').disabled = !editable;
    $<HTMLButtonElement>('report-sign').disabled = !editable || !this.canSign;
    $('report-amend').classList.toggle('hidden', !(this.canSign && signed));
    $<HTMLButtonElement>('report-amend').disabled = this.busy;
    if (!this.busy) {
      setText(
        'report-note',
        !open
          ? ''
          : signed
            ? this.canSign
              ? 'signed: Amend to change it'
              : 'signed: only a physician can amend it'
            : !this.canEdit
              ? `your role cannot write reports`
              : !this.canSign
                ? 'a physician signs the report'
                : '',
        'muted',
      );
    }
    this.renderLinks(c);
    this.renderMeasurements();
    this.renderVersions();
  }

  private renderLinks(c: Report | null): void {
    const box = $('report-links');
    box.replaceChildren();
    if (c === null) return;
    if (c.srSopInstanceUid) box.append(el('div', {}, 'SR: ', el('span', { class: 'uid', id: 'report-sr-uid' }, c.srSopInstanceUid)));
    if (c.fhirDiagnosticReportId) {
      const id = encodeURIComponent(c.fhirDiagnosticReportId);
      box.append(el('div', {}, 'FHIR: ', el('a', { id: 'report-fhir-link', href: `fhir/DiagnosticReport/${id}`, target: '_blank', rel: 'noopener' }, `DiagnosticReport/${c.fhirDiagnosticReportId}`)));
    }
  }

  private renderMeasurements(): void {
    const box = $('report-measurements');
    const c = this.history.current;
    const editable = this.studyUid !== null && this.canEdit && !(c !== null && isSigned(c)) && !this.busy;
    const rows: HTMLElement[] = [];
    const listed = new Set<string>();
    for (const m of this.measurements) {
      if (typeof m.id !== 'string') continue;
      listed.add(m.id);
      const box = el('input', { type: 'checkbox', 'data-measurement-id': m.id, id: `report-m-${m.id}` });
      box.checked = this.picked.has(m.id);
      box.disabled = !editable;
      rows.push(el('label', { for: box.id }, box, `${m.kind} ${savedValueText(m)} — ${m.plane}${m.label === undefined ? '' : ` — ${m.label}`}`));
    }
    // Cited by the report but not (or no longer) in the acquisition's list.
    for (const id of this.picked) {
      if (!listed.has(id)) rows.push(el('div', { class: 'warn', 'data-missing-measurement': id }, `measurement ${id} (not in the list)`));
    }
    if (rows.length === 0) rows.push(el('span', { class: 'muted' }, 'no saved measurements: measure on the slices, then save'));
    box.replaceChildren(...rows);
  }

  private versionOf(id: string): number | undefined {
    return this.history.versions.find((v) => v.id === id)?.version;
  }

  private renderVersions(): void {
    const box = $('report-versions');
    const vs = this.history.versions;
    if (vs.length === 0) {
      box.replaceChildren(el('span', { class: 'muted' }, 'none'));
      return;
    }
    box.replaceChildren(
      ...vs.map((v) => {
        const who = isSigned(v) ? `signed by ${v.signedBy ?? '—'} ${fmtTime(v.signedAtMs ?? null)}` : `by ${v.authoredBy} ${fmtTime(v.updatedAtMs)}`;
        const replaces = v.replacesId ? ` · amends v${this.versionOf(v.replacesId) ?? '?'}` : '';
        return el(
          'details',
          { 'data-version': String(v.version), 'data-status': v.status },
          el('summary', {}, `v${v.version} · ${STATUS_TEXT[v.status]} · ${who}${replaces}`),
          el('pre', {}, v.findings || '(no findings)'),
          ...(v.conclusion ? [el('pre', {}, `Conclusion: ${v.conclusion}`)] : []),
          el('div', { class: 'muted' }, `${v.measurementIds.length} measurement(s)`),
        );
      }),
    );
  }
}
