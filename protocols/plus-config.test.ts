import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePlusConfig, transformRepositoryFromConfig } from './plus-config.ts';
import { throwsWith } from './testing.ts';

const assertBadFile = (fn: () => unknown, ...fragments: string[]): void => {
  throwsWith(fn, 'ECO3D_ERR_BAD_FILE', ...fragments);
};

const COORDS = `
  <CoordinateDefinitions>
    <Transform From="Image" To="Probe"
      Matrix="0 0.08 0 11
              -0.08 0 0 50
              0 0 0.08 0
              0 0 0 1" Error="0.58" Date="012712_152030" />
    <Transform From="Phantom" To="Reference" Matrix="1 0 0 1  0 1 0 2  0 0 1 3  0 0 0 1" />
  </CoordinateDefinitions>`;

const config = (recon: string, coords = COORDS): string => `<?xml version="1.0" encoding="utf-8"?>\n<PlusConfiguration version="2.1">${coords}\n${recon}\n</PlusConfiguration>\n`;

test('reads CoordinateDefinitions and every VolumeReconstruction attribute', () => {
  const cfg = parsePlusConfig(config(`
  <VolumeReconstruction ImageCoordinateFrame="Image" ReferenceCoordinateFrame="Reference"
    OutputSpacing="0.5 0.5 0.25" OutputOrigin="-15 -15 30" OutputExtent="0 300 0 300 0 200"
    ClipRectangleOrigin="192 16" ClipRectangleSize="420 580"
    FanAnglesDeg="-45 45" FanOriginPixel="380 20" FanRadiusStartPixel="120" FanRadiusStopPixel="360"
    PixelRejectionThreshold="3" SkipInterval="2" Interpolation="linear" Optimization="FULL"
    CompoundingMode="MAXIMUM" NumberOfThreads="1" FillHoles="ON">
    <HoleFilling>
      <HoleFillingElement Type="GAUSSIAN" Size="5" Stdev="1.5" MinimumKnownVoxelsRatio="0.5" />
      <HoleFillingElement Type="STICK" StickLengthLimit="9" NumberOfSticksToUse="1" />
      <HoleFillingElement Type="NEAREST_NEIGHBOR" Size="3" MinimumKnownVoxelsRatio="0.1" />
    </HoleFilling>
  </VolumeReconstruction>`), { source: 'C.xml' });
  assert.equal(cfg.source, 'C.xml');
  assert.deepEqual(cfg.coordinateDefinitions.map((t) => [t.from, t.to, [...t.matrix]]), [
    ['Image', 'Probe', [0, 0.08, 0, 11, -0.08, 0, 0, 50, 0, 0, 0.08, 0, 0, 0, 0, 1]],
    ['Phantom', 'Reference', [1, 0, 0, 1, 0, 1, 0, 2, 0, 0, 1, 3, 0, 0, 0, 1]],
  ]);
  assert.deepEqual(cfg.volumeReconstruction, {
    imageCoordinateFrame: 'Image', referenceCoordinateFrame: 'Reference',
    outputSpacing: [0.5, 0.5, 0.25], outputOrigin: [-15, -15, 30], outputExtent: [0, 300, 0, 300, 0, 200],
    clipRectangleOrigin: [192, 16], clipRectangleSize: [420, 580],
    fanAnglesDeg: [-45, 45], fanOriginPixel: [380, 20], fanRadiusStartPixel: 120, fanRadiusStopPixel: 360,
    enableFanAnglesAutoDetect: false, fanAnglesAutoDetectBrightnessThreshold: 30, fanAnglesAutoDetectFilterRadiusPixel: 10,
    pixelRejectionThreshold: 3, skipInterval: 2, interpolation: 'LINEAR', optimization: 'FULL', compoundingMode: 'MAXIMUM',
    numberOfThreads: 1, fillHoles: true,
    holeFilling: [
      { type: 'GAUSSIAN', size: 5, stdev: 1.5, minimumKnownVoxelsRatio: 0.5 },
      { type: 'STICK', stickLengthLimit: 9, numberOfSticksToUse: 1 },
      { type: 'NEAREST_NEIGHBOR', size: 3, minimumKnownVoxelsRatio: 0.1 },
    ],
    recomputeOutputSpacing: false,
  });
  const repo = transformRepositoryFromConfig(cfg);
  assert.deepEqual([...repo.get('Probe', 'Image')].map((v) => Math.round(v * 1e6) / 1e6), [0, -12.5, 0, 625, 12.5, 0, 0, -137.5, 0, 0, 12.5, 0, 0, 0, 0, 1]);
});

test('defaults, deprecated spellings, and a VolumeReconstruction inside a Device', () => {
  const d = parsePlusConfig(config('<VolumeReconstruction OutputSpacing="1 1 1" />')).volumeReconstruction!;
  assert.equal(d.interpolation, 'NEAREST_NEIGHBOR');
  assert.equal(d.compoundingMode, 'MEAN');
  assert.equal(d.fanRadiusStopPixel, 500);
  assert.equal(d.outputOrigin, undefined);
  assert.equal(d.imageCoordinateFrame, undefined);
  assert.deepEqual(d.clipRectangleSize, [0, 0]);
  assert.equal(d.fillHoles, false);
  const old = parsePlusConfig(config('<VolumeReconstruction OutputSpacing="1 1 1" Compounding="Off" FanAngles="-30 30" FanOrigin="1 2" FanDepth="300" SkipInterval="0" />')).volumeReconstruction!;
  assert.equal(old.compoundingMode, 'LATEST');
  assert.deepEqual([old.fanAnglesDeg, old.fanOriginPixel, old.fanRadiusStopPixel, old.skipInterval], [[-30, 30], [1, 2], 300, 1]);
  assert.equal(parsePlusConfig(config('<VolumeReconstruction OutputSpacing="1 1 1" Compounding="On" />')).volumeReconstruction!.compoundingMode, 'MEAN');
  assert.equal(parsePlusConfig(config('<VolumeReconstruction OutputSpacing="1 1 1" Calculation="MAXIMUM" />')).volumeReconstruction!.compoundingMode, 'MAXIMUM');
  assert.equal(parsePlusConfig(config('<VolumeReconstruction OutputSpacing="1 1 1" CompoundingMode="LATEST" Compounding="On" />')).volumeReconstruction!.compoundingMode, 'LATEST');
  const nested = parsePlusConfig(config('<DataCollection><Device Id="V" Type="VirtualVolumeReconstructor"><VolumeReconstruction OutputSpacing="2 2 2" /></Device></DataCollection>'));
  assert.deepEqual(nested.volumeReconstruction?.outputSpacing, [2, 2, 2]);
  assert.equal(parsePlusConfig(config('')).volumeReconstruction, undefined);
  // FillHoles OFF: the HoleFilling children are not read (as in PLUS)
  assert.deepEqual(parsePlusConfig(config('<VolumeReconstruction OutputSpacing="1 1 1" FillHoles="OFF"><HoleFilling><HoleFillingElement Type="BOGUS" /></HoleFilling></VolumeReconstruction>')).volumeReconstruction!.holeFilling, []);
});

test('bad configs: each error names the file, the element and the attribute', () => {
  const src = { source: 'C.xml' };
  const bad = (recon: string, ...fragments: string[]): void => assertBadFile(() => parsePlusConfig(config(recon), src), ...fragments);
  bad('<VolumeReconstruction OutputSpacing="1 1 1" Interpolaton="LINEAR" />', 'C.xml: VolumeReconstruction attribute Interpolaton: unknown attribute');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" Interpolation="CUBIC" />', 'C.xml: VolumeReconstruction attribute Interpolation: unknown value "CUBIC" (expected NEAREST_NEIGHBOR, LINEAR)');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" CompoundingMode="MEDIAN" />', 'VolumeReconstruction attribute CompoundingMode: unknown value "MEDIAN"');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" CompoundingMode="IMPORTANCE_MASK" />', 'CompoundingMode: IMPORTANCE_MASK compounding is not supported');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" Optimization="TURBO" />', 'VolumeReconstruction attribute Optimization: unknown value "TURBO"');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" FillHoles="YES" />', 'VolumeReconstruction attribute FillHoles: unknown value "YES" (expected ON, OFF)');
  bad('<VolumeReconstruction />', 'C.xml: VolumeReconstruction attribute OutputSpacing: is required');
  bad('<VolumeReconstruction OutputSpacing="1 1" />', 'VolumeReconstruction attribute OutputSpacing: expected 3 numbers, got 2');
  bad('<VolumeReconstruction OutputSpacing="1 0 1" />', 'OutputSpacing: 1 0 1: spacing must be positive');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" OutputExtent="0 10 0 10 0 9.5" />', 'VolumeReconstruction attribute OutputExtent: "0 10 0 10 0 9.5": expected integers');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" FanAnglesDeg="-45 abc" />', 'VolumeReconstruction attribute FanAnglesDeg: "abc" is not a finite number');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" FillHoles="ON" />', 'C.xml: VolumeReconstruction HoleFilling: FillHoles is ON but the HoleFilling element is missing');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" FillHoles="ON"><HoleFilling><HoleFillingElement Type="STICK" StickLengthLimit="9" /></HoleFilling></VolumeReconstruction>', 'C.xml: HoleFillingElement[0] attribute NumberOfSticksToUse: is required for Type = STICK');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" FillHoles="ON"><HoleFilling><HoleFillingElement Type="STICK" StickLengthLimit="9" NumberOfSticksToUse="1" /><HoleFillingElement Type="BLUR" /></HoleFilling></VolumeReconstruction>', 'HoleFillingElement[1] attribute Type: unknown value "BLUR"');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" FillHoles="ON"><HoleFilling><HoleFillingElement Type="GAUSSIAN" Size="3" Stdev="1" MinimumKnownVoxelsRatio="1.5" /></HoleFilling></VolumeReconstruction>', 'HoleFillingElement[0] attribute MinimumKnownVoxelsRatio: 1.5: must be between 0 and 1');
  bad('<VolumeReconstruction OutputSpacing="1 1 1" FillHoles="ON"><HoleFilling><HoleFillingElement Type="GAUSSIAN" Size="3" Stdev="1" MinimumKnownVoxelsRatio="0.5" Sigma="2" /></HoleFilling></VolumeReconstruction>', 'HoleFillingElement[0] attribute Sigma: unknown attribute');
  const coords = (m: string, extra = ''): string => `<CoordinateDefinitions><Transform From="Image" To="Probe" Matrix="${m}" />${extra}</CoordinateDefinitions>`;
  const badCoords = (c: string, ...fragments: string[]): void => assertBadFile(() => parsePlusConfig(config('', c), src), ...fragments);
  badCoords(coords('1 0 0 0 0 1 0 0 0 0 1 0 0 0 0'), 'C.xml: CoordinateDefinitions Transform From="Image" To="Probe" attribute Matrix: expected 16 numbers, got 15');
  badCoords(coords('1 0 0 NaN 0 1 0 0 0 0 1 0 0 0 0 1'), 'attribute Matrix: "NaN" is not a finite number');
  badCoords(coords('1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1', '<Transform From="Probe" To="Image" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1" />'), 'C.xml: ProbeToImage: cannot be set: its inverse ImageToProbe is already defined');
  badCoords('<CoordinateDefinitions><Transform To="Probe" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1" /></CoordinateDefinitions>', 'needs both From and To');
  assertBadFile(() => parsePlusConfig('<PlusConfiguration><VolumeReconstruction OutputSpacing="1 1 1"></PlusConfiguration>', src), 'C.xml: line 1: malformed XML');
});
