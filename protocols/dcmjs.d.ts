// The slice of dcmjs 0.52 that protocols/dicom-us.ts uses. dcmjs ships no type declarations;
// this declares only what we call, with the shapes we rely on (checked by dicom-us.test.ts).
declare module 'dcmjs' {
  /** A dataset keyed by keyword (`PatientName`, `SharedFunctionalGroupsSequence`, …). */
  export type NaturalizedDataset = Record<string, unknown>;
  /** A dataset keyed by 8-hex-digit tag, each element `{ vr, Value }`. */
  export type DenaturalizedDataset = Record<string, { vr: string; Value?: unknown[]; InlineBinary?: string; BulkDataURI?: string }>;

  export interface DicomDictInstance {
    meta: DenaturalizedDataset;
    dict: DenaturalizedDataset;
    write(options?: { allowInvalidVRLength?: boolean; fragmentMultiframe?: boolean }): ArrayBuffer;
  }

  export interface ReadFileOptions {
    ignoreErrors?: boolean;
    untilTag?: string | null;
    includeUntilTagValue?: boolean;
    /** Keep views into the input buffer instead of copying every value. */
    noCopy?: boolean;
    forceStoreRaw?: boolean;
  }

  const dcmjs: {
    data: {
      DicomDict: new (meta: DenaturalizedDataset) => DicomDictInstance;
      DicomMessage: { readFile(buffer: ArrayBuffer, options?: ReadFileOptions): DicomDictInstance };
      DicomMetaDictionary: {
        naturalizeDataset(dataset: DenaturalizedDataset): NaturalizedDataset;
        denaturalizeDataset(dataset: NaturalizedDataset): DenaturalizedDataset;
      };
    };
    log: { setLevel(level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent'): void; getLevel(): number };
  };
  export default dcmjs;
}
