/**
 * index.html of the web app: static text (metrics, what the model is and is not) rendered at build time, so it
 * reads the same with scripts blocked; the bundle (app.js) adds the file picker's results.
 */
import { type AppSettings, type MetricsRow, SETTINGS_ELEMENT_ID } from './settings';

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function percent(x: number): string {
  return Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : '-';
}

function metricsRow(name: string, m: MetricsRow): string {
  const cells = [m.accuracy, m.precision, m.recall, m.specificity, m.f1].map(percent);
  const auc = Number.isFinite(m.auc) ? m.auc.toFixed(3) : '-';
  return `<tr><th scope="row">${name}</th>${cells.map((c) => `<td>${c}</td>`).join('')}<td>${auc}</td><td>${m.count}</td></tr>`;
}

/** A JSON value safe inside a <script> element (no "</script>" or "<!--" can close it early). */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

const STYLE = `
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1000px; padding: 1rem 1.5rem; color: #1d2430; }
  h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
  .note { background: #fff6e0; border-left: 4px solid #e0a800; padding: 0.6rem 0.9rem; }
  table { border-collapse: collapse; margin: 0.5rem 0; }
  th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #dde; text-align: right; }
  th[scope=row], thead th:first-child { text-align: left; }
  #drop { border: 2px dashed #8895aa; border-radius: 8px; padding: 1.2rem; text-align: center; margin: 1rem 0; }
  #drop.over { background: #eef4ff; border-color: #3a6ee8; }
  #status { color: #445; font-size: 0.9rem; }
  #status.error, .result.error .message { color: #b00020; }
  .result { border: 1px solid #dde; border-radius: 8px; padding: 0.6rem 0.9rem; margin: 0.8rem 0; }
  .result h3 { margin: 0 0 0.4rem; font-size: 1rem; word-break: break-all; }
  .images { display: flex; gap: 1rem; flex-wrap: wrap; }
  figure { margin: 0; } figcaption { font-size: 0.8rem; color: #556; max-width: 224px; }
  canvas { width: 224px; height: 224px; image-rendering: auto; background: #000; }
  .decision.PNEUMONIA { color: #b00020; font-weight: 600; } .decision.NORMAL { color: #116d2f; font-weight: 600; }
`;

function kermanyNote(s: AppSettings): string {
  return `The model learnt from ${s.train.NORMAL + s.train.PNEUMONIA} front-view chest X-rays (${s.train.NORMAL} normal,
${s.train.PNEUMONIA} pneumonia) of the Kermany et al. (2018) dataset: children aged one to five, all from one hospital
(Guangzhou Women and Children's Medical Center). It has not been validated on adults, on other hospitals, scanners or
film types, on lateral views, or on other lung diseases, and its probability is not a clinical risk. Do not use it to
decide anything about a patient.`;
}

function syntheticNote(s: AppSettings): string {
  return `This model learnt from ${s.train.NORMAL + s.train.PNEUMONIA} <em>synthetic</em> radiograph-like pictures made
by this project (<code>npm run data:demo</code>), not from X-rays: its answers say nothing about pneumonia.`;
}

function quantizationNote(s: AppSettings): string {
  const q = s.quantization;
  if (!q) return '';
  return (
    ` These are the float32 model's figures; with the ${escapeHtml(s.weights)} weights this page uses, test accuracy is ` +
    `${percent(q.quantizedAccuracy)} (float32: ${percent(q.floatAccuracy)}; ${q.decisionsChanged} of ${q.images} decisions differ).`
  );
}

export function renderPage(settings: AppSettings): string {
  const s = settings;
  const testWhere = s.testSource === 'official' ? "the dataset's own test folder" : 'films set aside from the training folder, by patient';
  const weights = s.weights === 'float32' ? 'float32 weights' : `weights quantized to ${s.weights}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Pneumonia in chest X-rays: ${escapeHtml(s.run)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Pneumonia in a chest X-ray</h1>
<p>Model of run <code>${escapeHtml(s.run)}</code> (${s.imageSize}x${s.imageSize} grey input, ${weights}); it says
PNEUMONIA when its probability is at least <strong>${s.threshold.toFixed(4)}</strong>, a threshold chosen on the
validation split (rule ${escapeHtml(s.thresholdRule)}).</p>
<div class="note" id="about">
<p><strong>A research demo, not a diagnostic device.</strong> ${s.synthetic ? syntheticNote(s) : kermanyNote(s)}</p>
<p>Your images stay in this browser: nothing is uploaded.</p>
</div>
<h2>How well it did on held-out films</h2>
<table id="metrics">
<thead><tr><th></th><th>accuracy</th><th>precision</th><th>recall</th><th>specificity</th><th>F1</th><th>AUC</th><th>images</th></tr></thead>
<tbody>${metricsRow('validation', s.val)}${metricsRow('test', s.test)}</tbody>
</table>
<p>Test: ${escapeHtml(testWhere)}, never used for training or for choosing the threshold.${quantizationNote(s)}</p>
<h2>Try a film</h2>
<div id="drop">
<p>Drop chest X-rays here (JPEG or PNG, any size or colour), or
<label>pick files: <input id="files" type="file" multiple accept="image/jpeg,image/png,.jpg,.jpeg,.png"></label></p>
<p id="status">Loading the model...</p>
</div>
<div id="results"></div>
<p><small>Red in the Grad-CAM overlay marks the regions that pushed the model towards pneumonia (Selvaraju et al.,
2017); an all-blue overlay means nothing did. It shows where the model looked, not where the disease is.</small></p>
<script type="application/json" id="${SETTINGS_ELEMENT_ID}">${scriptJson(s)}</script>
<script src="model.js"></script>
<script src="wasm.js"></script>
<script src="app.js"></script>
</body>
</html>
`;
}
