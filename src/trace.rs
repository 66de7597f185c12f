//! OpenTelemetry traces, exported over OTLP/HTTP when `--otlp-endpoint`
//! or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and nothing at all when not:
//! every function here returns at once while [`init`] has not turned
//! tracing on.
//!
//! One flow is one trace. Its trace id, and the span ids of the flow and of
//! each phase visit, are derived from the flow's id (and the visit's
//! number), so that every engine and worker puts its spans in the same
//! trace, under the right parent, without a lookup:
//!
//! - the flow's span runs from its creation to its end, and is emitted by
//!   the engine that ends it;
//! - a phase visit's span, under the flow's, is emitted by the engine that
//!   moves the flow on from it;
//! - a handler's enumerate and a job's attempt each get a span, under the
//!   visit's, from the worker that ran it. The visit's context travels with
//!   the task message (`traceparent`), and the attempt's is handed to the
//!   handler: `TRACEPARENT` in a command's environment, `traceparent` in the
//!   program protocol's request.
//!
//! Spans go out in batches from a thread of the exporter's own; [`shutdown`]
//! sends what is left when the process stops.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider, Tracer};
use sha2::{Digest, Sha256};

use crate::ids::FlowId;
use crate::model::{FlowRecord, FlowStatus, Task};
use crate::time::Timestamp;

/// The variable OpenTelemetry's exporters read, and where `--otlp-endpoint`
/// falls back to.
pub const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

struct Tracing {
    provider: SdkTracerProvider,
    tracer: Tracer,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Turns tracing on when an endpoint is given (`--otlp-endpoint`, or the
/// standard variables): `endpoint` is the collector's base URL, to which
/// `/v1/traces` is added. Does nothing without one.
pub fn init(endpoint: Option<&str>, service: &str) -> Result<(), String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let from_environment = std::env::var(ENDPOINT_VARIABLE)
        .ok()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .filter(|url| !url.trim().is_empty());
    let endpoint = endpoint.map(str::trim).filter(|url| !url.is_empty());
    if endpoint.is_none() && from_environment.is_none() {
        return Ok(());
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_headers(Default::default())
        // A collector that does not answer delays no exit by more.
        .with_timeout(Duration::from_secs(3));
    if let Some(base) = endpoint {
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(format!(
                "--otlp-endpoint `{base}` is not an http:// or https:// URL (a collector's OTLP/HTTP address, such as http://localhost:4318)"
            ));
        }
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(DerivedIds::default())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("distribot {service}"))
                .build(),
        )
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "distribot");
    let _ = TRACING.set(Tracing { provider, tracer });
    Ok(())
}

/// Sends the spans not sent yet. For the end of the process.
pub fn shutdown() {
    if let Some(tracing) = TRACING.get() {
        let _ = tracing.provider.shutdown();
    }
}

pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// The W3C `traceparent` of a phase visit, for the task messages of its
/// work; `None` while tracing is off.
pub fn visit_traceparent(flow: &FlowId, seq: u32) -> Option<String> {
    enabled().then(|| traceparent(trace_id(flow), visit_span_id(flow, seq)))
}

/// The same, for a task.
pub fn task_traceparent(task: &Task) -> Option<String> {
    visit_traceparent(task.flow(), task.seq_and_slot().0)
}

/// The flow left its current visit at `at`.
pub fn visit_left(record: &FlowRecord, at: Timestamp) {
    if !enabled() {
        return;
    }
    let visit = record.current();
    emit(Finished {
        name: format!("phase {}", visit.phase),
        trace: trace_id(&record.id),
        span: visit_span_id(&record.id, visit.seq),
        parent: Some(flow_span_id(&record.id)),
        start: visit.started_at,
        end: at,
        attributes: vec![
            KeyValue::new("distribot.flow.id", record.id.to_string()),
            KeyValue::new("distribot.workflow", record.workflow.name.to_string()),
            KeyValue::new("distribot.phase", visit.phase.to_string()),
            KeyValue::new("distribot.visit", i64::from(visit.seq)),
        ],
        error: visit.error.as_ref().map(|error| error.message.clone()),
    });
}

/// The flow ended, with `status`, at `at`.
pub fn flow_ended(record: &FlowRecord, status: FlowStatus, at: Timestamp) {
    if !enabled() {
        return;
    }
    emit(Finished {
        name: format!("flow {}", record.workflow.name),
        trace: trace_id(&record.id),
        span: flow_span_id(&record.id),
        parent: None,
        start: record.created_at,
        end: at,
        attributes: vec![
            KeyValue::new("distribot.flow.id", record.id.to_string()),
            KeyValue::new("distribot.workflow", record.workflow.name.to_string()),
            KeyValue::new("distribot.status", status.to_string()),
        ],
        error: (status != FlowStatus::Finished).then(|| format!("the flow {status}")),
    });
}

/// The span of one handler call (an enumerate or a job's attempt), open
/// while the call runs. Empty while tracing is off.
pub struct CallSpan(Option<opentelemetry_sdk::trace::Span>);

impl CallSpan {
    /// Starts the span of `task`'s call, under the visit its message names
    /// (`traceparent`, or the visit's own when the message had none).
    pub fn start(task: &Task, carried: Option<&str>) -> Self {
        let Some(tracing) = TRACING.get() else {
            return Self(None);
        };
        let parent = carried.and_then(parse_traceparent).unwrap_or_else(|| {
            let (seq, _) = task.seq_and_slot();
            (trace_id(task.flow()), visit_span_id(task.flow(), seq))
        });
        let (handler, version) = task.handler();
        let mut attributes = vec![
            KeyValue::new("distribot.flow.id", task.flow().to_string()),
            KeyValue::new("distribot.handler", format!("{handler}@{version}")),
        ];
        let name = match task {
            Task::Enumerate {
                cursor, attempt, ..
            } => {
                attributes.push(KeyValue::new("distribot.phase", cursor.phase.to_string()));
                attributes.push(KeyValue::new("distribot.attempt", i64::from(*attempt)));
                format!("enumerate {handler}")
            }
            Task::Process {
                key,
                phase,
                attempt,
                ..
            } => {
                attributes.push(KeyValue::new("distribot.phase", phase.to_string()));
                attributes.push(KeyValue::new("distribot.job.id", key.id().to_string()));
                attributes.push(KeyValue::new("distribot.attempt", i64::from(*attempt)));
                format!("job {handler}")
            }
        };
        let span = tracing
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&tracing.tracer, &remote(parent.0, parent.1));
        Self(Some(span))
    }

    /// This call's own `traceparent`, for the handler to continue the trace.
    pub fn traceparent(&self) -> Option<String> {
        let span = self.0.as_ref()?;
        let context = span.span_context();
        Some(traceparent(context.trace_id(), context.span_id()))
    }

    /// Ends the span; `failure` is why the call failed, if it did.
    pub fn end(self, failure: Option<&str>) {
        if let Some(mut span) = self.0 {
            if let Some(failure) = failure {
                span.set_status(Status::error(failure.to_owned()));
            }
            span.end();
        }
    }
}

/// A span known whole only once it is over (a flow's, a visit's), with
/// the ids derived for it.
struct Finished {
    name: String,
    trace: TraceId,
    span: SpanId,
    parent: Option<SpanId>,
    start: Timestamp,
    end: Timestamp,
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

fn emit(finished: Finished) {
    let Some(tracing) = TRACING.get() else {
        return;
    };
    let parent = match finished.parent {
        Some(parent) => remote(finished.trace, parent),
        None => Context::new(),
    };
    NEXT_IDS.with(|next| next.set(Some((finished.trace, finished.span))));
    let mut span = tracing
        .tracer
        .span_builder(finished.name)
        .with_start_time(system_time(finished.start))
        .with_attributes(finished.attributes)
        .start_with_context(&tracing.tracer, &parent);
    NEXT_IDS.with(|next| next.set(None));
    if let Some(error) = finished.error {
        span.set_status(Status::error(error));
    }
    span.end_with_timestamp(system_time(finished.end));
}

fn remote(trace: TraceId, span: SpanId) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

fn system_time(at: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(at.millis())
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn trace_id(flow: &FlowId) -> TraceId {
    let digest = digest(&format!("distribot trace {flow}"));
    TraceId::from_bytes(digest[..16].try_into().expect("16 bytes"))
}

fn flow_span_id(flow: &FlowId) -> SpanId {
    let digest = digest(&format!("distribot flow {flow}"));
    SpanId::from_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn visit_span_id(flow: &FlowId, seq: u32) -> SpanId {
    let digest = digest(&format!("distribot visit {flow} {seq}"));
    SpanId::from_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn traceparent(trace: TraceId, span: SpanId) -> String {
    format!("00-{trace}-{span}-01")
}

/// Reads a W3C `traceparent` (`00-TRACE-SPAN-FLAGS`).
fn parse_traceparent(text: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    (trace != TraceId::INVALID && span != SpanId::INVALID).then_some((trace, span))
}

thread_local! {
    /// The ids the next span started on this thread takes, where they are
    /// derived rather than drawn (see [`emit`]).
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for a span [`emit`] starts: the SDK draws every id
/// from its generator, so the derived ones are handed over through it.
#[derive(Debug, Default)]
struct DerivedIds(RandomIdGenerator);

impl IdGenerator for DerivedIds {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_IDS.with(Cell::get) {
            Some((trace, _)) => trace,
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT_IDS.with(Cell::get) {
            Some((_, span)) => span,
            None => self.0.new_span_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flows_ids_are_the_same_wherever_they_are_derived() {
        let flow = FlowId::new("0192b5a0-0000-7000-8000-000000000001");
        assert_eq!(trace_id(&flow), trace_id(&flow));
        assert_ne!(visit_span_id(&flow, 0), visit_span_id(&flow, 1));
        assert_ne!(flow_span_id(&flow), visit_span_id(&flow, 0));
        let text = traceparent(trace_id(&flow), visit_span_id(&flow, 2));
        assert_eq!(
            parse_traceparent(&text),
            Some((trace_id(&flow), visit_span_id(&flow, 2)))
        );
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        for text in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(parse_traceparent(text), None, "{text}");
        }
    }

    #[test]
    fn nothing_is_traced_while_tracing_is_off() {
        let flow = FlowId::new("f");
        assert_eq!(visit_traceparent(&flow, 0), None);
    }
}
