// `eco3d export`: a reconstructed volume to the open formats other tools read: NRRD and MetaImage
// for 3D Slicer and ITK, and an iso-surface mesh (marching cubes at a threshold) as binary STL or
// OBJ for 3D printing and mesh tools. The format follows the output file's extension.
import { extname } from 'node:path';
import { Eco3dError } from '../protocols/errors.ts';
import { encodeObj, encodeStlBinary, meshTriangleCount, meshVertexCount } from '../protocols/mesh.ts';
import type { Volume } from '../protocols/imaging.ts';
import { readFileBytes, readMetaImageVolumeFile, writeFileBytes, writeMetaImageVolumeFile } from '../protocols/metaimage.ts';
import { decodeNrrdVolume, encodeNrrdVolume } from '../protocols/nrrd.ts';
import { isosurface } from '../streamer/isosurface.ts';

export interface ExportOptions {
  readonly inputFile: string;
  readonly outputFile: string;
  /** Iso-level for meshes (a voxel ≥ it is inside); required for .stl and .obj. */
  readonly thresholdLevel?: number;
}

export interface ExportReport {
  readonly outputFile: string;
  readonly format: 'nrrd' | 'mha' | 'stl' | 'obj';
  readonly dims: readonly number[];
  readonly vertices?: number;
  readonly triangles?: number;
}

const VOLUME_INPUTS = ['.mha', '.mhd', '.nrrd'];

async function readVolume(file: string): Promise<Volume> {
  const ext = extname(file).toLowerCase();
  if (ext === '.nrrd') return decodeNrrdVolume(await readFileBytes(file), { source: file });
  if (ext === '.mha' || ext === '.mhd') return readMetaImageVolumeFile(file);
  throw new Eco3dError('ECO3D_ERR_CONFIG', `cannot read "${file}": expected a volume (${VOLUME_INPUTS.join(', ')})`);
}

export async function runExport(o: ExportOptions): Promise<ExportReport> {
  const ext = extname(o.outputFile).toLowerCase();
  const mesh = ext === '.stl' || ext === '.obj';
  if (!mesh && ext !== '.nrrd' && ext !== '.mha') {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `cannot write "${o.outputFile}": the extension chooses the format: .nrrd, .mha, .stl or .obj`);
  }
  if (mesh && o.thresholdLevel === undefined) throw new Eco3dError('ECO3D_ERR_CONFIG', 'a mesh needs --threshold <level> (1..255; e.g. 127.5)');
  if (!mesh && o.thresholdLevel !== undefined) throw new Eco3dError('ECO3D_ERR_CONFIG', '--threshold applies to meshes (.stl, .obj) only');
  const volume = await readVolume(o.inputFile);
  const dims = [...volume.grid.dims];
  switch (ext) {
    case '.nrrd':
      await writeFileBytes(o.outputFile, encodeNrrdVolume(volume));
      return { outputFile: o.outputFile, format: 'nrrd', dims };
    case '.mha':
      await writeMetaImageVolumeFile(o.outputFile, volume);
      return { outputFile: o.outputFile, format: 'mha', dims };
    default: {
      const m = isosurface(volume, o.thresholdLevel!);
      await writeFileBytes(o.outputFile, ext === '.stl' ? encodeStlBinary(m) : encodeObj(m));
      return { outputFile: o.outputFile, format: ext === '.stl' ? 'stl' : 'obj', dims, vertices: meshVertexCount(m), triangles: meshTriangleCount(m) };
    }
  }
}
