import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp, existsSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describeDataset, discoverDataset, patientId, DatasetError } from '../src/data/discover';

const repoRoot = path.resolve(__dirname, '..');
const sharedData = process.env.PNEUMO_SHARED_DATA ?? path.resolve(repoRoot, '../shared/data/chest_xray');
const hasShared = existsSync(path.join(sharedData, 'train'));

async function touch(file: string, content = 'x'): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await fsp.writeFile(file, content);
}

describe('patientId', () => {
  it.each([
    ['person123_bacteria_456.jpeg', 'person123'],
    ['person1_virus_6.jpeg', 'person1'],
    ['person1438_virus_2452_1.jpeg', 'person1438'],
    ['IM-0115-0001.jpeg', 'IM-0115'],
    ['NORMAL2-IM-1427-0001.jpeg', 'NORMAL2-IM-1427'],
    ['IM-0629-0001-0002.jpeg', 'IM-0629-0001'],
    ['/abs/dir/IM-0001-0001.jpg', 'IM-0001'],
    ['scan_12.png', 'scan'],
    ['chest.png', 'chest'],
    ['0042.jpeg', '0042'],
  ])('%s -> %s', (name, id) => {
    expect(patientId(name)).toBe(id);
  });
});

describe('discoverDataset', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'discover-'));
  });
  afterAll(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('reads an odd Kaggle tree: nested chest_xray, upper/lower case folders, junk files skipped with reasons', async () => {
    const root = path.join(tmp, 'odd');
    const data = path.join(root, 'chest_xray', 'chest_xray');
    await touch(path.join(root, '__MACOSX', 'chest_xray', '._x.jpeg'));
    await touch(path.join(data, 'TRAIN', 'normal', 'IM-0002-0001.jpeg'));
    await touch(path.join(data, 'TRAIN', 'normal', 'IM-0001-0001.JPG'));
    await touch(path.join(data, 'TRAIN', 'normal', '.DS_Store'));
    await touch(path.join(data, 'TRAIN', 'normal', 'notes.txt'));
    await touch(path.join(data, 'TRAIN', 'Pneumonia', 'person2_virus_3.png'));
    await touch(path.join(data, 'TRAIN', 'Pneumonia', 'person1_bacteria_1.jpeg'));
    await touch(path.join(data, 'TRAIN', '.DS_Store'));
    await touch(path.join(data, 'val', 'NORMAL', 'IM-0009-0001.jpeg'));
    await touch(path.join(data, 'Test', 'NORMAL', 'IM-0100-0001.jpeg'));
    await touch(path.join(data, 'Test', 'PNEUMONIA', 'person9_virus_9.jpeg'));
    await touch(path.join(data, 'Test', 'PNEUMONIA', 'sub', 'x.jpeg'));

    const ds = await discoverDataset(root);
    expect(ds.root).toBe(data);
    expect(ds.sources).toEqual(['train', 'val', 'test']);
    expect(ds.images.map((i) => [path.relative(data, i.path), i.label, i.patient, i.source])).toEqual([
      ['TRAIN/normal/IM-0001-0001.JPG', 'NORMAL', 'IM-0001', 'train'],
      ['TRAIN/normal/IM-0002-0001.jpeg', 'NORMAL', 'IM-0002', 'train'],
      ['TRAIN/Pneumonia/person1_bacteria_1.jpeg', 'PNEUMONIA', 'person1', 'train'],
      ['TRAIN/Pneumonia/person2_virus_3.png', 'PNEUMONIA', 'person2', 'train'],
      ['val/NORMAL/IM-0009-0001.jpeg', 'NORMAL', 'IM-0009', 'val'],
      ['Test/NORMAL/IM-0100-0001.jpeg', 'NORMAL', 'IM-0100', 'test'],
      ['Test/PNEUMONIA/person9_virus_9.jpeg', 'PNEUMONIA', 'person9', 'test'],
    ]);
    expect(ds.images.every((i) => path.isAbsolute(i.path))).toBe(true);
    await touch(path.join(root, 'chest_xray', 'README.txt'));
    const again = await discoverDataset(root);
    const skipped = Object.fromEntries(again.skipped.map((s) => [path.relative(root, s.path), s.reason]));
    expect(Object.keys(skipped).sort()).toEqual(
      [
        '__MACOSX',
        'chest_xray/README.txt',
        'chest_xray/chest_xray/TRAIN/.DS_Store',
        'chest_xray/chest_xray/TRAIN/normal/.DS_Store',
        'chest_xray/chest_xray/TRAIN/normal/notes.txt',
        'chest_xray/chest_xray/Test/PNEUMONIA/sub',
      ].sort(),
    );
    expect(skipped['__MACOSX']).toMatch(/macOS/);
    expect(again.images).toEqual(ds.images);
    expect(skipped['chest_xray/chest_xray/TRAIN/normal/notes.txt']).toMatch(/not an image/);
    expect(skipped['chest_xray/chest_xray/TRAIN/normal/.DS_Store']).toMatch(/hidden/);
    expect(skipped['chest_xray/chest_xray/Test/PNEUMONIA/sub']).toMatch(/folder/);

    // The lines a run's log and notebook 01 print: counts per folder and class, patients, what was skipped.
    const lines = describeDataset(again, 2);
    expect(lines[0]).toBe(
      `Data: ${data}: 7 images of 7 patients (train/NORMAL 2, train/PNEUMONIA 2, val/NORMAL 1, test/NORMAL 1, test/PNEUMONIA 1)`,
    );
    const shown = again.skipped.slice(0, 2).map((sk) => `${path.basename(sk.path)} (${sk.reason})`);
    expect(lines[1]).toBe(`  skipped 6 file(s): ${shown.join(', ')}, ...`);
    expect(describeDataset({ ...again, skipped: [] })).toHaveLength(1);
  });

  it('allows missing val/test and an empty val class', async () => {
    const root = path.join(tmp, 'trainonly');
    await touch(path.join(root, 'train', 'NORMAL', 'a1.jpeg'));
    await touch(path.join(root, 'train', 'PNEUMONIA', 'person1_virus_1.jpeg'));
    await fsp.mkdir(path.join(root, 'val', 'NORMAL'), { recursive: true });
    const ds = await discoverDataset(root);
    expect(ds.sources).toEqual(['train', 'val']);
    expect(ds.images).toHaveLength(2);
  });

  it('wrong root -> DatasetError naming the path and the fix', async () => {
    const missing = path.join(tmp, 'nope');
    await expect(discoverDataset(missing)).rejects.toThrow(DatasetError);
    await expect(discoverDataset(missing)).rejects.toThrow(/No dataset at .*nope.*train.*npm run data:demo/);
    const empty = path.join(tmp, 'emptyroot');
    await fsp.mkdir(empty);
    await expect(discoverDataset(empty)).rejects.toThrow(/No dataset at .*emptyroot: no train\/ folder/);
  });

  it('missing train -> DatasetError', async () => {
    const root = path.join(tmp, 'notrain');
    await touch(path.join(root, 'test', 'NORMAL', 'a1.jpeg'));
    await touch(path.join(root, 'test', 'PNEUMONIA', 'person1_virus_1.jpeg'));
    const err = await discoverDataset(root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetError);
    expect((err as Error).message).toMatch(/found test\/ but no train\/ folder/);
  });

  it('missing or empty class folder in train -> DatasetError naming the folder', async () => {
    const root = path.join(tmp, 'noclass');
    await touch(path.join(root, 'train', 'NORMAL', 'a1.jpeg'));
    await expect(discoverDataset(root)).rejects.toThrow(/train\/PNEUMONIA is missing/);
    await fsp.mkdir(path.join(root, 'train', 'PNEUMONIA'));
    await touch(path.join(root, 'train', 'PNEUMONIA', 'readme.txt'));
    await expect(discoverDataset(root)).rejects.toThrow(/PNEUMONIA holds no .jpeg\/.jpg\/.png images/);
  });

  it.skipIf(!hasShared)(`shared data (${sharedData}): 1341 NORMAL + 3875 PNEUMONIA, .DS_Store skipped`, async () => {
    const ds = await discoverDataset(sharedData);
    const train = ds.images.filter((i) => i.source === 'train');
    expect(train.filter((i) => i.label === 'NORMAL')).toHaveLength(1341);
    expect(train.filter((i) => i.label === 'PNEUMONIA')).toHaveLength(3875);
    expect(ds.skipped.some((s) => s.path.endsWith('.DS_Store'))).toBe(true);
    const patients = new Set(ds.images.map((i) => i.patient));
    console.log(`shared data: ${ds.images.length} images, ${patients.size} patients, ${ds.skipped.length} skipped`);
  });
});
