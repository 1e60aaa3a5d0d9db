//! Observability of requests: Prometheus metrics (`GET /metrics`) and the fields of each
//! request's log span. Both faces call [`finish`] once per RPC with its name, protocol and result.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::Error;
use crate::domain::error;
use crate::telemetry::{self, Family, Kind};

/// How a request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
    Connect,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Connect => "connect",
        }
    }
}

const REQUESTS: &str = "totp_requests_total";
const DURATION: &str = "totp_request_duration_seconds";
const CODE_OUTCOMES: &str = "totp_code_outcomes_total";
/// Gauge of database connections, labelled `state="in_use"|"idle"`.
pub const DB_CONNECTIONS: &str = "totp_db_connections";

/// How often histogram observations are folded into their buckets when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed on first use; tests start many servers in
/// one process, and a process has one recorder).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), &buckets)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(
                // The store's batch sizes (`totp_db_*_batch_size`).
                Matcher::Suffix("_batch_size".to_owned()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        // The recorder keeps every histogram observation until it is drained, which only a
        // scrape or an upkeep does: without this thread, a service nobody scrapes grows by a
        // few bytes per request (docs/performance.md). A thread, not a task: the recorder
        // outlives any one runtime (tests start many).
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("totp-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })
            .expect("the metrics upkeep thread starts");
        for family in REQUEST_FAMILIES {
            telemetry::describe(family);
        }
        handle
    })
}

/// The families this module records.
const REQUEST_FAMILIES: [Family; 4] = [
    Family {
        name: REQUESTS,
        kind: Kind::Counter,
        help: "Requests by RPC, protocol and gRPC status code",
    },
    Family {
        name: DURATION,
        kind: Kind::Histogram,
        help: "Request latency in seconds by RPC and protocol",
    },
    Family {
        name: CODE_OUTCOMES,
        kind: Kind::Counter,
        help: "Submitted TOTP codes by RPC (verify, check) and outcome (ok, invalid, replayed, locked)",
    },
    Family {
        name: DB_CONNECTIONS,
        kind: Kind::Gauge,
        help: "Database pool connections by state (in_use, idle)",
    },
];

/// The Prometheus text of every family of the catalogue (see [`telemetry`]): the exporter's
/// samples, and the `HELP` and `TYPE` lines of the families without one yet, so that dashboards
/// and alerts find every family from the first scrape.
pub fn render() -> String {
    let handle = prometheus();
    let families = telemetry::families();
    for family in &families {
        match family.kind {
            Kind::Counter => metrics::describe_counter!(family.name, family.help),
            Kind::Gauge => metrics::describe_gauge!(family.name, family.help),
            Kind::Histogram => metrics::describe_histogram!(family.name, family.help),
        }
    }
    let mut text = handle.render();
    for family in families {
        if !text.contains(&format!("# TYPE {} ", family.name)) {
            text.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {}\n",
                family.name,
                family.help,
                family.name,
                family.kind.as_str()
            ));
        }
    }
    text
}

/// The labels of a request's counter: rpc, protocol and gRPC status code.
type RequestLabels = (&'static str, Protocol, i32);

thread_local! {
    /// This thread's handles of the request counter and latency histogram by (rpc, protocol,
    /// code): a handle found here skips building the labels and looking them up in the
    /// recorder's registry, which every request did before (docs/performance.md). Per thread,
    /// so that no lock is shared; the handles all point at the one recorder.
    static REQUEST_METRICS: RefCell<HashMap<RequestLabels, (Counter, Histogram)>> =
        RefCell::new(HashMap::new());
}

/// Logs the cause of an unexpected failure; the client only sees the generic message. (A
/// database outage is logged by the domain once when it begins and once when it ends, not for
/// every request it fails.)
pub fn log_server_fault(error: &Error) {
    if let Error::Internal(_) = error {
        tracing::error!(error = %error, "request failed");
    }
}

/// Records one finished RPC of any protocol: counter and latency, the code outcome for Verify
/// and Check, the fields of the request's span, and the cause of an unexpected failure in the
/// log (the one place errors are logged).
pub fn finish(rpc: &'static str, protocol: Protocol, started: Instant, error: Option<&Error>) {
    prometheus();
    if let Some(error) = error {
        log_server_fault(error);
    }
    let code = error.map_or(0, |error| error.code() as i32);
    let elapsed = started.elapsed().as_secs_f64();
    REQUEST_METRICS.with_borrow_mut(|handles| {
        let (requests, duration) = handles.entry((rpc, protocol, code)).or_insert_with(|| {
            let labels = [("rpc", rpc), ("protocol", protocol.as_str())];
            (
                metrics::counter!(REQUESTS, "rpc" => rpc, "protocol" => protocol.as_str(), "code" => code.to_string()),
                metrics::histogram!(DURATION, &labels),
            )
        });
        requests.increment(1);
        duration.record(elapsed);
    });
    if let Some(kind) = match rpc {
        "VerifyTOTPRegistration" => Some("verify"),
        "CheckTOTP" => Some("check"),
        _ => None,
    } {
        let outcome = match error {
            None => Some("ok"),
            Some(Error::Rejected(rejection)) => match *rejection {
                error::INVALID_CODE => Some("invalid"),
                error::CODE_ALREADY_USED => Some("replayed"),
                error::USER_LOCKED => Some("locked"),
                _ => None,
            },
            Some(_) => None,
        };
        if let Some(outcome) = outcome {
            metrics::counter!(CODE_OUTCOMES, "rpc" => kind, "outcome" => outcome).increment(1);
        }
    }
    let span = tracing::Span::current();
    span.record("rpc", rpc);
    span.record("protocol", protocol.as_str());
    span.record("code", code);
}

/// Records the user id a request is about in its span.
pub fn note_user(user_id: &str) {
    tracing::Span::current().record("user_id", user_id);
}
