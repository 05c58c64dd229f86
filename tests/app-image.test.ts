/** The web app's pure parts in Node: the file checks, the RGBA preprocessing and the weight quantizer. */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { checkImageBytes, describeContent, PAGE_MAX_PIXELS, rgbaToModelInput } from '../src/app/image';
import { affineRange, quantizeWeights } from '../src/app/quantize';
import { decodeBuffer } from '../src/data/decode';
import { escapeHtml, scriptJson } from '../src/app/page';

/** A PNG signature and IHDR claiming the given size, with no pixel data. */
function pngHeaderClaiming(width: number, height: number): Uint8Array {
  const buf = Buffer.alloc(33);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(buf, 0);
  buf.writeUInt32BE(13, 8);
  buf.write('IHDR', 12, 'latin1');
  buf.writeUInt32BE(width, 16);
  buf.writeUInt32BE(height, 20);
  buf[24] = 8;
  buf[25] = 0;
  return buf;
}

describe('checkImageBytes (before the page allocates any pixels)', () => {
  it('names empty files, non-images, oversized and truncated images', async () => {
    expect(checkImageBytes(new Uint8Array(0))).toEqual({ ok: false, message: 'empty file (0 bytes)' });
    const text = checkImageBytes(new TextEncoder().encode('hello, I am not an X-ray'));
    expect(text).toEqual({ ok: false, message: 'not a JPEG or PNG image (content starts with text "hello, I am not an X-ray...")' });
    const huge = checkImageBytes(pngHeaderClaiming(20000, 20000));
    expect(huge.ok).toBe(false);
    if (!huge.ok) expect(huge.message).toMatch(/^image is 20000x20000 pixels \(400 megapixels\); this page decodes at most 40 megapixels/);
    const over = checkImageBytes(pngHeaderClaiming(20001, 20000));
    expect(over).toEqual({ ok: false, message: 'image is 20001x20000 pixels, over the 20000x20000 limit' });
    const jpeg = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#808080' } })
      .jpeg()
      .toBuffer();
    expect(checkImageBytes(jpeg)).toEqual({ ok: true, header: { format: 'jpeg', width: 40, height: 30, channels: 3, bitDepth: 8 } });
    const cmyk = await sharp(jpeg).toColourspace('cmyk').jpeg().toBuffer();
    expect(checkImageBytes(cmyk)).toMatchObject({ ok: false, message: expect.stringMatching(/^CMYK JPEG: browsers convert/) });
    expect(checkImageBytes(jpeg.subarray(0, jpeg.length - 100))).toMatchObject({
      ok: false,
      message: expect.stringMatching(/^truncated image/),
    });
  });

  it('keeps the page limit below decode.ts limit and describes binary content in hex', () => {
    expect(PAGE_MAX_PIXELS).toBeLessThan(20000 * 20000);
    expect(describeContent(Uint8Array.from([0, 1, 2, 0xff, 0xfe, 9, 10, 11, 12]))).toBe('bytes 000102fffe090a0b');
  });
});

describe('rgbaToModelInput', () => {
  // 100 px output: decode.ts pre-shrinks inputs over twice the output side with libvips, which no browser can copy.
  it('gives the pixels decode.ts gives for the same image (RGBA from PNG, alpha ignored)', async () => {
    const width = 173;
    const height = 121;
    const rgb = Buffer.alloc(width * height * 3);
    for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 37 + (i % 7) * 11) % 256;
    const png = await sharp(rgb, { raw: { width, height, channels: 3 } })
      .png()
      .toBuffer();
    const expected = await decodeBuffer(png, 100, 'fill');
    const rgba = new Uint8ClampedArray(width * height * 4);
    for (let p = 0; p < width * height; p++) {
      rgba.set(rgb.subarray(p * 3, p * 3 + 3), p * 4);
      rgba[p * 4 + 3] = 128; // alpha is ignored, as PIL's convert('L') and decode.ts do
    }
    expect(Array.from(rgbaToModelInput(rgba, width, height, 100, 'fill'))).toEqual(Array.from(expected));
    expect(Array.from(rgbaToModelInput(rgba, width, height, 100, 'cover'))).toEqual(Array.from(await decodeBuffer(png, 100, 'cover')));
  });

  it('refuses a buffer that does not hold width x height RGBA pixels', () => {
    expect(() => rgbaToModelInput(new Uint8Array(10), 2, 2, 8, 'fill')).toThrow(/expected 2x2 RGBA pixels \(16 bytes\), got 10/);
  });
});

describe('quantizeWeights', () => {
  it('stores codes tfjs decodes back to within half a step, and leaves int32 weights alone', () => {
    const values = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3 - 0.5);
    const ints = Int32Array.from([7, -3, 42]);
    const data = new Uint8Array(values.byteLength + ints.byteLength);
    data.set(new Uint8Array(values.buffer), 0);
    data.set(new Uint8Array(ints.buffer), values.byteLength);
    const specs: tf.io.WeightsManifestEntry[] = [
      { name: 'w', shape: [10, 100], dtype: 'float32' },
      { name: 'step', shape: [3], dtype: 'int32' },
    ];
    for (const bits of [8, 16] as const) {
      const q = quantizeWeights(specs, data.buffer, bits);
      expect(q.data.byteLength).toBe(1000 * (bits / 8) + 12);
      const { scale } = affineRange(values, bits);
      const decoded = tf.io.decodeWeights(q.data, q.specs);
      const back = decoded.w.dataSync();
      let worst = 0;
      for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(back[i] - values[i]));
      expect(worst).toBeLessThanOrEqual(scale / 2 + 1e-6);
      expect(worst).toBeGreaterThan(0);
      expect(Array.from(decoded.step.dataSync())).toEqual([7, -3, 42]);
      tf.dispose(Object.values(decoded));
    }
  });

  it('refuses truncated weight data', () => {
    expect(() => quantizeWeights([{ name: 'w', shape: [4], dtype: 'float32' }], new ArrayBuffer(8), 8)).toThrow(/ends inside w/);
  });
});

describe('page text', () => {
  it('escapes HTML and cannot close its JSON script block', () => {
    expect(escapeHtml('<a href="x">&\'')).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
    expect(scriptJson({ run: '</script><!--' })).not.toMatch(/<\/script>|<!--/);
    expect(JSON.parse(scriptJson({ run: '</script>' }))).toEqual({ run: '</script>' });
  });
});
