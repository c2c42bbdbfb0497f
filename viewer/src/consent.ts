// Research consent at the bedside: staff ask the patient and record yes / no / revoked
// (POST /api/consents {decision}); the current decision, who recorded it and when come from
// GET /api/consents.
import { ApiError, getConsent, postConsent, type ConsentDecision, type ConsentRecord } from './api.ts';
import { $, fmtTime, run, setText } from './ui.ts';

export async function loadConsent(): Promise<void> {
  let c: ConsentRecord | null;
  try {
    c = await getConsent();
  } catch (e) {
    // No current exam: nobody to ask yet.
    if (e instanceof ApiError && e.code === 'ECO3D_ERR_CONFLICT') {
      $('consent-current').dataset.decision = '';
      setText('consent-current', 'no current exam — set the exam first', 'muted');
      return;
    }
    throw e;
  }
  const box = $('consent-current');
  box.dataset.decision = c?.decision ?? '';
  if (c === null) {
    setText('consent-current', 'not asked yet', 'muted');
    return;
  }
  const who = c.by === null ? '' : ` — recorded by ${c.by}`;
  const when = c.atMs === null ? '' : `, ${fmtTime(c.atMs)}`;
  setText('consent-current', `${c.decision}${who}${when}`, c.decision === 'yes' ? 'ok' : c.decision === 'no' || c.decision === 'revoked' ? 'bad' : '');
}

export function wireConsent(): void {
  for (const d of ['yes', 'no', 'revoked'] as const satisfies readonly ConsentDecision[]) {
    $(`consent-${d}`).addEventListener('click', () =>
      run(async () => {
        await postConsent(d);
        await loadConsent();
      }, 'consent'),
    );
  }
  document.addEventListener('eco3d:exam-changed', () => run(loadConsent, 'consent'));
  run(loadConsent, 'consent');
}
