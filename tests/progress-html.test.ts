import { describe, expect, it } from 'vitest';
import { progressHtml } from '../src/train/progress';

describe('the notebook progress display', () => {
  const base = { epoch: 2, epochs: 10, batches: 4, history: [] };
  it('shows a dash for loss and ETA before the first batch of an epoch', () => {
    const html = progressHtml({ ...base, batch: 0, loss: NaN, eta: NaN });
    expect(html).toContain('0/4 batches, loss –, ETA –');
    expect(html).not.toMatch(/NaN|\?/);
  });
  it('shows the running loss and ETA once batches are done', () => {
    expect(progressHtml({ ...base, batch: 2, loss: 0.51234, eta: 65 })).toContain('2/4 batches, loss 0.5123, ETA 1m05s');
  });
});
