// The progress line of long CPU-bound work (kiln profile, npm run train): its text, and where it goes on a
// terminal and elsewhere, with a fake clock and stream (no timing).

import { describe, expect, it } from 'vitest';
import { ProgressLine, formatDuration, formatRate, progressBar, progressText } from '../compiler/cli/progress.ts';

describe('the progress formatter', () => {
  it('formats durations in the two largest units', () => {
    expect([0, 4.4, 59.6, 65, 3599, 3600, 7620].map(formatDuration)).toEqual(['0s', '4s', '1m 00s', '1m 05s', '59m 59s', '1h 00m', '2h 07m']);
    expect(formatDuration(NaN)).toBe('?');
  });

  it('gives a rate per second, or seconds per item when slower than one a second', () => {
    expect(formatRate(8, 2500)).toBe('3.2 it/s');
    expect(formatRate(500, 1000, 'forward')).toBe('500 forward/s');
    expect(formatRate(2, 9000)).toBe('4.5 s/it');
    expect(formatRate(0, 1000)).toBe('? it/s');
  });

  it('draws the bar, the count, the rate and the time left', () => {
    expect(progressBar(5, 20, 8)).toBe('[##......] 5/20');
    expect(progressText(8, 20, 4000, { width: 10 })).toBe('[####......] 8/20  2.0 it/s  eta 6s');
    expect(progressText(20, 20, 4000, { width: 10 })).toBe('[##########] 20/20  5.0 it/s  eta 0s');
    expect(progressText(0, 20, 0, { width: 4 })).toBe('[....] 0/20  ? it/s  eta ?');
    // a resumed run: 100 of 5000 were done before; 10 more took 5 s
    expect(progressText(110, 5000, 5000, { width: 4, base: 100 })).toBe('[....] 110/5000  2.0 it/s  eta 40m 45s');
  });
});

describe('ProgressLine', () => {
  const stream = (isTTY: boolean) => ({ isTTY, text: '', write(t: string) { this.text += t; } });

  it('rewrites one line in place on a terminal and clears it when done', () => {
    let t = 0;
    const s = stream(true);
    const p = new ProgressLine('compiled', 4, { stream: s, now: () => t, unit: 'forward' });
    p.update(0);
    t = 1000;
    p.update(2);
    p.finish();
    const line = 'compiled [############............] 2/4  2.0 forward/s  eta 1s';
    expect(s.text).toBe(`\rcompiled [........................] 0/4  ? forward/s  eta ?\x1b[K\r${line}\x1b[K\r${' '.repeat(line.length)}\r`);
  });

  it('writes a plain line every plainEveryMs elsewhere, and nothing for short work', () => {
    let t = 0;
    const s = stream(false);
    const p = new ProgressLine('eager', 100, { stream: s, now: () => t, plainEveryMs: 10_000 });
    for (let i = 0; i < 100; i++, t += 250) p.update(i); // 25 s in all
    p.finish();
    expect(s.text.split('\n').filter(Boolean)).toEqual([
      'eager [##########..............] 40/100  4.0 it/s  eta 15s',
      'eager [###################.....] 80/100  4.0 it/s  eta 5s',
    ]);
    const short = stream(false);
    const q = new ProgressLine('eager', 10, { stream: short, now: () => t });
    for (let i = 0; i < 10; i++, t += 250) q.update(i);
    q.finish();
    expect(short.text).toBe('');
  });
});
