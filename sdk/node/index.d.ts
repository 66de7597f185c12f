// Types for the distribot handler SDK, written by hand so the package needs no
// build step: editors and TypeScript users get the same API that index.js has.

/** Any value JSON can carry: jobs, outputs, flow data. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** What a phase visit's enumerate sees when the flow came in by an error transition. */
export interface PhaseError {
  phase: string;
  handler: string;
  /** null when enumerate itself failed. */
  job_id: string | null;
  attempts: number;
  message: string;
}

interface BaseContext<Data> {
  flowId: string;
  workflow: string;
  phase: string;
  handler: string;
  /** The handler version the worker asked for: the one this program registered. */
  version: string;
  /** The flow's input. */
  data: Data;
  /** The W3C trace context of this call while the worker traces, else null. */
  traceparent: string | null;
  /** Aborted when the worker cancels this request (timeout, flow canceled or paused, deadline, shutdown). */
  readonly signal: AbortSignal;
  /** Writes a line to the worker's log, tagged with this request's handler, flow and job. */
  log(...parts: unknown[]): void;
}

export interface EnumerateContext<Data = any> extends BaseContext<Data> {
  /** Outputs of the phases visited before this one: { PHASE: { HANDLER: [output, ...] } }. */
  outputs: Record<string, Record<string, Json[]>>;
  /** null, or what failed when the flow came into this phase by an error transition. */
  error: PhaseError | null;
}

export interface ProcessContext<Data = any> extends BaseContext<Data> {
  /** Stable across attempts and redeliveries: use it to make side effects idempotent. */
  jobId: string;
  /** Counts from 1. */
  attempt: number;
}

type MaybePromise<T> = T | Promise<T>;

export interface HandlerSpec<Job = any, Output = any, Data = any> {
  name: string;
  /** MAJOR.MINOR.PATCH (or MAJOR.MINOR); default "0.0.0". */
  version?: string;
  /** The jobs of one phase visit. Left out: one job, null. */
  enumerate?: (ctx: EnumerateContext<Data>) => MaybePromise<Iterable<Job>> | AsyncIterable<Job>;
  /** Does one job; returns its output, or undefined for none. Left out: every job succeeds with no output. */
  process?: (ctx: ProcessContext<Data>, job: Job) => MaybePromise<Output | undefined>;
}

/** Registers a handler; throws on a bad version, a name used twice, or a call after run(). */
export function handler<Job = any, Output = any, Data = any>(spec: HandlerSpec<Job, Output, Data>): void;

/** Sends the hello and serves the worker's requests until stdin closes, then exits the process. */
export function run(): void;

/** Thrown by handler code: this attempt failed, another one may succeed. */
export class Retry extends Error {
  constructor(message?: string, options?: { cause?: unknown });
}

/** Thrown by handler code: fail the phase now, without spending the remaining attempts. */
export class Fail extends Error {
  constructor(message?: string, options?: { cause?: unknown });
}
