//! OpenTelemetry traces of a distributed flow, received by a real OTLP/HTTP
//! endpoint in this test and decoded with the `opentelemetry-proto` types:
//! an engine and a worker, each its own process exporting its spans, make
//! one connected trace of the flow, with the flow, each phase visit, each
//! enumerate and each job attempt as spans, and the command a job runs is
//! handed the trace context in `TRACEPARENT`.
//!
//! Runs where `DISTRIBOT_AMQP_URL` and `DISTRIBOT_REDIS_URL` are set.

mod cluster;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::{eventually, services, workflow, Installation};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

/// An OTLP/HTTP receiver: every span posted to `/v1/traces`, decoded.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let serving = collector.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let collector = serving.clone();
                std::thread::spawn(move || collector.serve(stream));
            }
        });
        (collector, url)
    }

    /// Serves one connection's requests, one after another.
    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let mut writer = stream;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let status = if request_line.starts_with("POST /v1/traces ") {
                match ExportTraceServiceRequest::decode(body.as_slice()) {
                    Ok(request) => {
                        let mut spans = self.spans.lock().unwrap();
                        for resource in request.resource_spans {
                            for scope in resource.scope_spans {
                                spans.extend(scope.spans);
                            }
                        }
                        "200 OK"
                    }
                    Err(_) => "400 Bad Request",
                }
            } else {
                "404 Not Found"
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
            );
            if writer.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            AnyValue::StringValue(text) => text.clone(),
            AnyValue::IntValue(number) => number.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

const HANDLERS: &str = r#"
[[handlers]]
name = "Noop"
version = "1.0.0"
builtin = "noop"

[[handlers]]
name = "Traced"
version = "1.0.0"
enumerate = ["python3", "-c", "import json; print(json.dumps([1, 2]))"]
process = ["python3", "-c", "import json, os; print(json.dumps({'traceparent': os.environ.get('TRACEPARENT')}))"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_flow_is_one_connected_trace() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let (collector, endpoint) = Collector::start();
    // Spans leave each process a tenth of a second after they end.
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut installation = Installation::new(&amqp, &redis).await;
    let handlers = installation.dir.path().join("traced.toml");
    std::fs::write(&handlers, HANDLERS).unwrap();
    installation.start_engine_with(&["--otlp-endpoint", &endpoint]);
    installation.start_worker_with(&handlers, &["--otlp-endpoint", &endpoint]);
    let flow = workflow(json!({
        "workflow": "traced",
        "phases": {
            "prepare": {"is_initial": true, "transitions_to": "work", "handlers": ["Noop"]},
            "work": {"transitions_to": "done", "handlers": ["Traced"]},
            "done": {"is_final": true}
        }
    }));
    let id = installation
        .start(&flow, json!({"jobs": {"prepare": 3}}))
        .await;
    let record = installation.wait(&id, Duration::from_secs(60)).await;
    assert_eq!(record.status.to_string(), "finished");

    // One span for the flow, three visits, two enumerates, five jobs.
    let spans = {
        let collector = &collector;
        let id = &id;
        eventually("the flow's spans", Duration::from_secs(30), || async move {
            collector
                .spans()
                .iter()
                .filter(|span| attribute(span, "distribot.flow.id").as_deref() == Some(id.as_str()))
                .count()
                >= 11
        })
        .await;
        collector.spans()
    };
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|span| attribute(span, "distribot.flow.id").as_deref() == Some(id.as_str()))
        .collect();
    let by_kind = |prefix: &str| {
        ours.iter()
            .filter(|span| span.name.starts_with(prefix))
            .copied()
            .collect::<Vec<&Span>>()
    };
    let (flows, visits, enumerates, jobs) = (
        by_kind("flow "),
        by_kind("phase "),
        by_kind("enumerate "),
        by_kind("job "),
    );
    assert_eq!(
        (flows.len(), visits.len(), enumerates.len(), jobs.len()),
        (1, 3, 2, 5),
        "{:?}",
        ours.iter().map(|span| &span.name).collect::<Vec<_>>()
    );

    // One trace, every span's parent in it, and the flow's span its root.
    let trace = &flows[0].trace_id;
    assert!(ours.iter().all(|span| &span.trace_id == trace));
    let by_id: HashMap<&[u8], &Span> = ours
        .iter()
        .map(|span| (span.span_id.as_slice(), *span))
        .collect();
    assert!(
        flows[0].parent_span_id.is_empty(),
        "the flow's span is the root"
    );
    for span in &ours {
        if span.span_id != flows[0].span_id {
            assert!(
                by_id.contains_key(span.parent_span_id.as_slice()),
                "span `{}` hangs from a span outside the trace",
                span.name
            );
        }
    }
    for visit in &visits {
        assert_eq!(visit.parent_span_id, flows[0].span_id);
    }
    let visit_of_phase: BTreeMap<String, &Span> = visits
        .iter()
        .map(|visit| (attribute(visit, "distribot.phase").unwrap(), *visit))
        .collect();
    for call in enumerates.iter().chain(&jobs) {
        let phase = attribute(call, "distribot.phase").unwrap();
        assert_eq!(
            call.parent_span_id, visit_of_phase[&phase].span_id,
            "`{}` hangs from its visit",
            call.name
        );
        assert!(attribute(call, "distribot.attempt").is_some());
        assert!(
            attribute(call, "distribot.handler").is_some_and(|handler| handler.ends_with("@1.0.0"))
        );
    }
    for job in &jobs {
        assert!(attribute(job, "distribot.job.id")
            .is_some_and(|job_id| job_id.starts_with(id.as_str())));
    }

    // The command saw its own attempt's context.
    let outputs = installation.client.outputs(&id).await.unwrap();
    let outputs = serde_json::to_value(outputs).unwrap();
    let traced: Vec<String> = outputs["work"]["Traced"]
        .as_array()
        .expect("the Traced handler's outputs")
        .iter()
        .map(|output| output["traceparent"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(traced.len(), 2);
    let traced_jobs: Vec<String> = jobs
        .iter()
        .filter(|job| attribute(job, "distribot.handler").is_some_and(|h| h.starts_with("Traced@")))
        .map(|job| format!("00-{}-{}-01", hex(trace), hex(&job.span_id)))
        .collect();
    for traceparent in &traced {
        assert!(
            traced_jobs.contains(traceparent),
            "{traceparent} is not a job's span: {traced_jobs:?}"
        );
    }
}
