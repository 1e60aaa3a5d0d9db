//! The load generator. It provisions users through the public API (ready TOTPs by importing a
//! secret with AddHumanUser, pending ones with RegisterTOTP, locked ones with LockUser), then
//! drives each scenario over REST, gRPC and gRPC-web at each concurrency for a fixed time and
//! prints requests/s, latency percentiles and the count of every outcome; an outcome other than
//! the scenario's expected one is counted as unexpected. `ceiling-sqlite` measures the SQLite
//! ceiling: a loop of the service's own write transaction, without the service, driving SQLite in
//! place as the service's writer does. `soak` holds several instances under a steady mixed load
//! for a long time (see [`soak`]).
//!
//! Its calls go through the shared client of `totp-client` ([`totp_client::calls`]), the one the
//! integration tests use. Usually run by `scripts/bench.sh`, which starts the database and the
//! service.

mod soak;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use rand::RngCore;
use serde::Serialize;
use tokio::task::JoinSet;

use totp_client::calls::{self, CallError, Rpc};
use totp_service::config::parse_duration;
use totp_service::domain::clock::{Clock, SystemClock};
use totp_service::domain::totp::{self, Algorithm, Secret};
use totp_service::proto::totpservice::v1 as totp_pb;
use totp_service::proto::zitadel::object::v2 as object_pb;
use totp_service::proto::zitadel::user::v2 as user_pb;

#[derive(Parser)]
#[command(about = "Load generator for totp-service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive the scenarios against a running service.
    Run(RunArgs),
    /// Measure the SQLite ceiling: the service's write transaction in a loop, no service.
    CeilingSqlite(CeilingArgs),
    /// Hold several instances under a steady mixed load for a long time, watching their memory,
    /// descriptors, connections, rate and latency.
    Soak(soak::SoakArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Base URL of the service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// A token holding user.write, user.credential.write and session.write everywhere.
    #[arg(long, env = "TOTP_BENCH_TOKEN")]
    token: String,
    /// Length of each measured run.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rest,grpc,grpc-web"
    )]
    protocols: Vec<Protocol>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "check-valid,check-wrong,check-locked,verify"
    )]
    scenarios: Vec<Scenario>,
    /// Users in the pools that are used round-robin (wrong codes, locked users).
    #[arg(long, default_value_t = 2000)]
    pool: usize,
    /// Process id of the service, to report its CPU time and peak memory.
    #[arg(long)]
    service_pid: Option<u32>,
    /// Process id of the database server (Postgres's postmaster), to report the CPU time of it
    /// and its children (the backends, the WAL writer, …).
    #[arg(long)]
    database_pid: Option<u32>,
    /// The service's Postgres. When given, it is vacuumed and checkpointed before every measured
    /// run (after that run's provisioning, if any), so that the upkeep which earlier writes set
    /// off (autovacuum, a WAL-triggered checkpoint) does not fall into some runs and not others.
    #[arg(long)]
    settle_database: Option<String>,
    /// Print one JSON object per run instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CeilingArgs {
    /// SQLite file to create (its folder must exist).
    #[arg(long)]
    path: std::path::PathBuf,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// CheckTOTP with valid codes, each user's time step used once.
    CheckValid,
    /// CheckTOTP with wrong codes, three in a row per user (run the service with a lockout above
    /// what a run reaches).
    CheckWrong,
    /// CheckTOTP against locked users.
    CheckLocked,
    /// VerifyTOTPRegistration of pending registrations.
    Verify,
}

impl Scenario {
    fn expected(self) -> &'static str {
        match self {
            Scenario::CheckValid | Scenario::Verify => "ok",
            Scenario::CheckWrong => "EVENT-8isk2",
            Scenario::CheckLocked => "COMMAND-SF3fg",
        }
    }
}

/// What one measured run gave.
#[derive(Serialize)]
struct Report {
    scenario: Scenario,
    protocol: Protocol,
    concurrency: usize,
    requests: usize,
    seconds: f64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    outcomes: BTreeMap<String, usize>,
    unexpected: usize,
    cpu_ms_per_1k: Option<f64>,
    peak_rss_mib: Option<f64>,
    db_cpu_ms_per_1k: Option<f64>,
    /// This load generator's own CPU: it shares the machine with the service and the database.
    generator_cpu_ms_per_1k: Option<f64>,
}

/// A user with a known secret.
#[derive(Clone)]
struct BenchUser {
    id: String,
    secret: Secret,
}

fn code_at(secret: &Secret, offset: i64) -> String {
    let step = totp::step_at(SystemClock.now().unix_seconds(), totp::PERIOD) + offset;
    totp::code_for_step(secret, step, totp::DIGITS, Algorithm::Sha1)
}

/// The next step of a user's valid checks: the earliest step after `used` that the service will
/// still accept when the request arrives, or `None` when the user's window is used up. The
/// window is the current step ± 1; the step before the current one is left out in the last
/// second of a step, as the service might see the request after the step changes.
fn next_valid_step(used: Option<i64>) -> Option<i64> {
    let now = SystemClock.now().unix_seconds();
    let current = totp::step_at(now, totp::PERIOD);
    let seconds_left = i64::from(totp::PERIOD) - now.rem_euclid(i64::from(totp::PERIOD));
    let earliest = if seconds_left > 1 {
        current - 1
    } else {
        current
    };
    let step = used.map_or(earliest, |used| (used + 1).max(earliest));
    (step <= current + 1).then_some(step)
}

/// A code that matches no step of the accepted window.
fn wrong_code(secret: &Secret) -> String {
    let window: Vec<String> = (-1..=1).map(|o| code_at(secret, o)).collect();
    (5..)
        .map(|o| code_at(secret, o))
        .find(|c| !window.contains(c))
        .expect("some step differs")
}

// ---- clients ----------------------------------------------------------------------------------

/// One protocol's client with the run's token, shared by the workers of a run.
#[derive(Clone)]
struct Client {
    protocol: Protocol,
    calls: Arc<calls::Client>,
    bearer: Arc<str>,
}

/// The answer to a call: `Ok` or the refusal's error id (or `code N` without one).
type Outcome<T> = Result<T, String>;

impl Client {
    async fn new(protocol: Protocol, base: &str, token: &str) -> anyhow::Result<Self> {
        let wire = match protocol {
            Protocol::Rest => calls::Protocol::Rest,
            Protocol::Grpc => calls::Protocol::Grpc,
            Protocol::GrpcWeb => calls::Protocol::GrpcWeb,
        };
        // A few HTTP/2 connections for gRPC, so one connection's task is not the bottleneck.
        let calls = calls::Client::connect(wire, base, 4)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(Client {
            protocol,
            calls: Arc::new(calls),
            bearer: format!("Bearer {token}").into(),
        })
    }

    async fn call<R: Rpc>(&self, request: R) -> Outcome<R::Response> {
        self.calls
            .call(Some(&self.bearer), request)
            .await
            .map_err(|error| match error {
                CallError::Refused(refusal) => refusal.label(),
                CallError::Contract(breach) => format!("bad answer: {breach}"),
                CallError::Transport(error) => format!("transport: {error}"),
            })
    }

    async fn check(&self, user_id: &str, code: String) -> Outcome<()> {
        let request = totp_pb::CheckTotpRequest {
            user_id: user_id.to_owned(),
            code,
        };
        self.call(request).await.map(|_| ())
    }

    async fn verify(&self, user_id: &str, code: String) -> Outcome<()> {
        let request = user_pb::VerifyTotpRegistrationRequest {
            user_id: user_id.to_owned(),
            code,
        };
        self.call(request).await.map(|_| ())
    }
}

// ---- provisioning -----------------------------------------------------------------------------

/// What kind of users a pool holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ready,
    Locked,
    Pending,
}

/// Makes the users of the runs, and keeps count of them and of the time it took.
struct Provisioner {
    client: Client,
    spent: Duration,
    users: usize,
}

impl Provisioner {
    async fn make(&mut self, kind: Kind, count: usize) -> anyhow::Result<Vec<BenchUser>> {
        let started = Instant::now();
        let users = provision(&self.client, kind, count).await?;
        self.spent += started.elapsed();
        self.users += users.len();
        Ok(users)
    }
}

/// Makes `count` users of `kind` through the public gRPC API, 32 at a time.
async fn provision(client: &Client, kind: Kind, count: usize) -> anyhow::Result<Vec<BenchUser>> {
    let run = format!("{:08x}", rand::thread_rng().next_u32());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let (client, next, run) = (client.clone(), next.clone(), run.clone());
        tasks.spawn(async move {
            let mut made = vec![];
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, String>(made);
                }
                let id = format!("bench-{run}-{index}");
                let mut secret = vec![0u8; 20];
                rand::thread_rng().fill_bytes(&mut secret);
                let secret = Secret::from_bytes(secret);
                let add = user_pb::AddHumanUserRequest {
                    user_id: Some(id.clone()),
                    organization: Some(object_pb::Organization {
                        org: Some(object_pb::organization::Org::OrgId("bench".into())),
                    }),
                    profile: Some(user_pb::SetHumanProfile {
                        given_name: "Bench".into(),
                        family_name: "User".into(),
                        ..Default::default()
                    }),
                    email: Some(user_pb::SetHumanEmail {
                        email: format!("{id}@bench.test"),
                        verification: None,
                    }),
                    totp_secret: (kind != Kind::Pending).then(|| secret.to_base32()),
                    username: None,
                };
                client.call(add).await?;
                let secret = match kind {
                    Kind::Ready => secret,
                    Kind::Locked => {
                        let lock = user_pb::LockUserRequest {
                            user_id: id.clone(),
                        };
                        client.call(lock).await?;
                        secret
                    }
                    Kind::Pending => {
                        let register = user_pb::RegisterTotpRequest {
                            user_id: id.clone(),
                        };
                        let registered = client.call(register).await?;
                        Secret::from_base32(&registered.secret).ok_or("bad secret")?
                    }
                };
                made.push(BenchUser { id, secret });
            }
        });
    }
    let mut users = vec![];
    while let Some(done) = tasks.join_next().await {
        users.extend(done?.map_err(|e| anyhow::anyhow!("provisioning failed: {e}"))?);
    }
    Ok(users)
}

// ---- runs -------------------------------------------------------------------------------------

/// CPU seconds (user + system) and parent process id of a process, from `/proc/<pid>/stat`.
fn cpu_and_parent(pid: u32) -> Option<(f64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((ticks / 100.0, parent))
}

/// CPU seconds (user + system) and peak RSS of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, f64)> {
    let (cpu, _) = cpu_and_parent(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, peak_kib / 1024.0))
}

/// CPU seconds (user + system) of a process and its children (not its children's children).
fn process_tree_cpu(pid: u32) -> Option<f64> {
    let (own, _) = cpu_and_parent(pid)?;
    let children = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(cpu_and_parent)
        .filter(|(_, parent)| *parent == pid)
        .map(|(cpu, _)| cpu);
    Some(own + children.sum::<f64>())
}

/// CPU milliseconds per 1,000 requests between two readings of CPU seconds.
fn per_1k(before: Option<f64>, after: Option<f64>, requests: usize) -> Option<f64> {
    match (before, after) {
        (Some(before), Some(after)) if requests > 0 => {
            Some((after - before) * 1000.0 / requests as f64 * 1000.0)
        }
        _ => None,
    }
}

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

/// One request of a scenario.
struct Request {
    user_id: String,
    code: String,
    /// What the user's next request is made from, when the user takes further requests: the time
    /// step this code uses (valid checks), or how many of the user's requests have been sent
    /// (wrong codes); `None` when a user takes one request.
    carry: Option<i64>,
}

/// What a worker does next with a user, given what its last request carried (if any).
enum Work {
    Send(Request),
    /// This user has no more requests; take the next.
    NextUser,
    /// No users are left.
    OutOfUsers,
}

type WorkItems = Arc<dyn Fn(usize, Option<i64>) -> Work + Send + Sync>;

/// `in_a_row` requests per user, taking the users of `pool` in turn (over and over), each with the
/// code `code` makes from its secret.
fn round_robin(
    pool: Arc<Vec<BenchUser>>,
    in_a_row: i64,
    code: impl Fn(&Secret) -> String + Send + Sync + 'static,
) -> WorkItems {
    Arc::new(move |user, sent| {
        let sent = sent.unwrap_or(0);
        if sent == in_a_row {
            return Work::NextUser;
        }
        let user = &pool[user % pool.len()];
        Work::Send(Request {
            user_id: user.id.clone(),
            code: code(&user.secret),
            carry: (in_a_row > 1).then_some(sent + 1),
        })
    })
}

/// A connection to the service's Postgres for putting its upkeep before a measured run.
struct Settle {
    connection: sqlx::PgConnection,
    spent: Duration,
    times: usize,
}

impl Settle {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let connection = sqlx::PgConnection::connect(url)
            .await
            .context("connecting to --settle-database")?;
        Ok(Settle {
            connection,
            spent: Duration::ZERO,
            times: 0,
        })
    }

    /// Vacuums (and analyzes) the service's tables, then checkpoints: what autovacuum and the
    /// checkpointer would otherwise do at a moment of their choosing.
    async fn settle(&mut self) -> anyhow::Result<()> {
        use sqlx::Executor as _;
        let started = Instant::now();
        self.connection
            .execute("VACUUM (ANALYZE) users, totp, events")
            .await
            .context("vacuuming")?;
        self.connection
            .execute("CHECKPOINT")
            .await
            .context("checkpointing")?;
        self.spent += started.elapsed();
        self.times += 1;
        Ok(())
    }
}

/// Runs one scenario: `concurrency` workers take users until the time is up or the users run
/// out. `item(user, carried)` gives the user's next request.
async fn measure(
    args: &RunArgs,
    client: &Client,
    scenario: Scenario,
    concurrency: usize,
    item: WorkItems,
) -> Report {
    let before = args.service_pid.and_then(process_usage);
    let database_before = args.database_pid.and_then(process_tree_cpu);
    let generator_before = process_usage(std::process::id());
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, item) = (client.clone(), next.clone(), item.clone());
        workers.spawn(async move {
            let mut latencies = vec![];
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            // A worker takes a user and sends all of that user's requests, one after the other,
            // so no two requests for one user are in flight at once.
            'users: while Instant::now() < deadline {
                let user = next.fetch_add(1, Ordering::Relaxed);
                let mut carried = None;
                loop {
                    if Instant::now() >= deadline {
                        break 'users;
                    }
                    let request = match item(user, carried) {
                        Work::Send(request) => request,
                        Work::NextUser => continue 'users,
                        Work::OutOfUsers => break 'users,
                    };
                    let sent = Instant::now();
                    let outcome = match scenario {
                        Scenario::Verify => client.verify(&request.user_id, request.code).await,
                        _ => client.check(&request.user_id, request.code).await,
                    };
                    latencies.push(sent.elapsed().as_micros() as u64);
                    *outcomes
                        .entry(outcome.err().unwrap_or_else(|| "ok".into()))
                        .or_default() += 1;
                    match request.carry {
                        Some(carry) => carried = Some(carry),
                        None => continue 'users,
                    }
                }
            }
            (latencies, outcomes)
        });
    }
    let mut latencies = vec![];
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = workers.join_next().await {
        let (l, o) = done.expect("worker");
        latencies.extend(l);
        for (k, v) in o {
            *outcomes.entry(k).or_default() += v;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let requests = latencies.len();
    let after = args.service_pid.and_then(process_usage);
    let cpu_ms_per_1k = per_1k(before.map(|b| b.0), after.map(|a| a.0), requests);
    let db_cpu_ms_per_1k = per_1k(
        database_before,
        args.database_pid.and_then(process_tree_cpu),
        requests,
    );
    let generator_cpu_ms_per_1k = per_1k(
        generator_before.map(|b| b.0),
        process_usage(std::process::id()).map(|a| a.0),
        requests,
    );
    let expected = scenario.expected();
    Report {
        scenario,
        protocol: client.protocol,
        concurrency,
        requests,
        seconds,
        rps: requests as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |m| *m as f64 / 1000.0),
        unexpected: outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != expected)
            .map(|(_, v)| v)
            .sum(),
        outcomes,
        cpu_ms_per_1k,
        peak_rss_mib: after.map(|(_, rss)| rss),
        db_cpu_ms_per_1k,
        generator_cpu_ms_per_1k,
    }
}

fn print_report(report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).expect("report serializes")
        );
        return;
    }
    println!(
        "{:<13} {:<9} {:>4} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>9} {:>8} {:>9} {:>10}",
        format!("{:?}", report.scenario),
        format!("{:?}", report.protocol),
        report.concurrency,
        report.requests,
        report.rps,
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.max_ms,
        report.unexpected,
        report
            .cpu_ms_per_1k
            .map_or("-".into(), |c| format!("{c:.0}")),
        report
            .peak_rss_mib
            .map_or("-".into(), |r| format!("{r:.1}")),
        report
            .db_cpu_ms_per_1k
            .map_or("-".into(), |c| format!("{c:.0}")),
        report
            .generator_cpu_ms_per_1k
            .map_or("-".into(), |c| format!("{c:.0}")),
    );
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.json {
        println!(
            "{:<13} {:<9} {:>4} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8} {:>9} {:>10}",
            "scenario",
            "protocol",
            "conc",
            "requests",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "unexp",
            "cpu ms/1k",
            "rss MiB",
            "db ms/1k",
            "gen ms/1k"
        );
    }
    let mut setup = Provisioner {
        client: Client::new(Protocol::Grpc, &args.target, &args.token).await?,
        spent: Duration::ZERO,
        users: 0,
    };
    let mut settle = match &args.settle_database {
        Some(url) => Some(Settle::connect(url).await?),
        None => None,
    };
    // The pools are only made for the scenarios that use them.
    let wanted = |scenario| args.scenarios.contains(&scenario);
    let wrong_pool = Arc::new(if wanted(Scenario::CheckWrong) {
        setup.make(Kind::Ready, args.pool).await?
    } else {
        vec![]
    });
    let locked_pool = Arc::new(if wanted(Scenario::CheckLocked) {
        setup.make(Kind::Locked, args.pool).await?
    } else {
        vec![]
    });
    // Users are provisioned for the rate a run may reach, with a margin; too few would end a
    // run early, too many cost set-up time (provisioning is most of the benchmark's time).
    // Valid checks are sized from the valid-check rate already seen at the same concurrency (an
    // earlier protocol) with a margin of 1.5, else from the fastest so far (the next
    // concurrency can be 2.5× that); verifications likewise from the verification rate seen at
    // the same concurrency, else from the valid-check run just before.
    let mut fastest_valid_checks = 2000.0_f64;
    let mut valid_checks_at: BTreeMap<usize, f64> = BTreeMap::new();
    let mut verifications_at: BTreeMap<usize, f64> = BTreeMap::new();
    let mut last_valid_checks = fastest_valid_checks;
    let mut unexpected = 0;
    for &protocol in &args.protocols {
        let client = Client::new(protocol, &args.target, &args.token).await?;
        for &concurrency in &args.concurrency {
            for &scenario in &args.scenarios {
                let seconds = args.duration.as_secs_f64();
                let item: WorkItems = match scenario {
                    Scenario::CheckValid => {
                        // Each user gives up to three checks in a row, each on the earliest
                        // step the service accepts that is later than the last one used, so
                        // every step is fresh (replay protection is exercised, not tripped).
                        let rate = valid_checks_at
                            .get(&concurrency)
                            .map_or(fastest_valid_checks * 2.5, |rate| rate * 1.5);
                        let needed = (rate * seconds) as usize / 3 + 100;
                        let users = Arc::new(setup.make(Kind::Ready, needed).await?);
                        Arc::new(move |user, used| {
                            let Some(user) = users.get(user) else {
                                return Work::OutOfUsers;
                            };
                            let Some(step) = next_valid_step(used) else {
                                return Work::NextUser;
                            };
                            Work::Send(Request {
                                user_id: user.id.clone(),
                                code: totp::code_for_step(
                                    &user.secret,
                                    step,
                                    totp::DIGITS,
                                    Algorithm::Sha1,
                                ),
                                carry: Some(step),
                            })
                        })
                    }
                    // Three wrong codes in a row per user, as a user retyping (and as the
                    // valid checks come, so the two rows meet the user cache alike).
                    Scenario::CheckWrong => round_robin(wrong_pool.clone(), 3, wrong_code),
                    Scenario::CheckLocked => {
                        round_robin(locked_pool.clone(), 1, |secret| code_at(secret, 0))
                    }
                    Scenario::Verify => {
                        let rate = verifications_at
                            .get(&concurrency)
                            .copied()
                            .unwrap_or(last_valid_checks);
                        let needed = (rate * 1.5 * seconds) as usize + 100;
                        let users = Arc::new(setup.make(Kind::Pending, needed).await?);
                        Arc::new(move |user, _| match users.get(user) {
                            Some(user) => Work::Send(Request {
                                user_id: user.id.clone(),
                                code: code_at(&user.secret, 0),
                                carry: None,
                            }),
                            None => Work::OutOfUsers,
                        })
                    }
                };
                if let Some(database) = &mut settle {
                    database.settle().await?;
                }
                let report = measure(&args, &client, scenario, concurrency, item).await;
                match scenario {
                    Scenario::CheckValid => {
                        last_valid_checks = report.rps;
                        fastest_valid_checks = fastest_valid_checks.max(report.rps);
                        valid_checks_at.insert(concurrency, report.rps);
                    }
                    Scenario::Verify => {
                        verifications_at.insert(concurrency, report.rps);
                    }
                    Scenario::CheckWrong | Scenario::CheckLocked => {}
                }
                unexpected += report.unexpected;
                if report.unexpected > 0 {
                    eprintln!(
                        "unexpected outcomes in {scenario:?} over {protocol:?} at {concurrency}: {:?}",
                        report.outcomes
                    );
                }
                print_report(&report, args.json);
            }
        }
    }
    eprintln!(
        "provisioning {} users took {:.1} s",
        setup.users,
        setup.spent.as_secs_f64()
    );
    if let Some(settle) = settle {
        eprintln!(
            "settling the database took {:.1} s over {} runs",
            settle.spent.as_secs_f64(),
            settle.times
        );
    }
    anyhow::ensure!(
        unexpected == 0,
        "{unexpected} requests had an unexpected outcome"
    );
    Ok(())
}

// ---- the SQLite ceiling -------------------------------------------------------------------------

/// Rows the SQLite ceiling writes to, taken in turn.
const CEILING_ROWS: i64 = 10_000;

async fn ceiling_sqlite(args: CeilingArgs) -> anyhow::Result<()> {
    use totp_service::store::{self, StoreOptions};
    // The service's schema and settings (WAL is kept in the file).
    store::open(&StoreOptions {
        url: format!("sqlite://{}?mode=rwc", args.path.display()),
        max_connections: Some(1),
        acquire_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(30),
        cache_capacity: 0,
        queue_capacity: 1,
    })
    .await
    .context("opening the SQLite file")?
    .close()
    .await;
    let path = args.path.clone();
    tokio::task::spawn_blocking(move || seed_ceiling_rows(&path)).await??;
    for &concurrency in &args.concurrency {
        let path = args.path.clone();
        let duration = args.duration;
        let (mut latencies, seconds) =
            tokio::task::spawn_blocking(move || ceiling_loop(&path, concurrency, duration))
                .await??;
        latencies.sort_unstable();
        let line = serde_json::json!({
            "ceiling": "sqlite",
            "concurrency": concurrency,
            "requests": latencies.len(),
            "rps": latencies.len() as f64 / seconds,
            "p99_ms": percentile(&latencies, 0.99),
        });
        if args.json {
            println!("{line}");
        } else {
            println!(
                "sqlite ceiling c={concurrency}: {:.0} tx/s, p99 {:.2} ms",
                line["rps"].as_f64().unwrap_or(0.0),
                line["p99_ms"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// A connection as the service's writer opens one (its settings, a busy timeout for waiting on
/// the other connections' write lock).
fn ceiling_connection(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA cache_size = -1024")?;
    Ok(conn)
}

fn seed_ceiling_rows(path: &std::path::Path) -> anyhow::Result<()> {
    let mut conn = ceiling_connection(path)?;
    let tx = conn.transaction()?;
    for n in 0..CEILING_ROWS {
        let user_id = format!("ceiling-{n}");
        tx.execute(
            "INSERT INTO users (user_id, resource_owner, username, email, email_verified, profile, state, sequence, created_at, change_date, failed_attempts, version) VALUES (?1, 'bench', ?1, ?1, 0, '{}', 'active', 1, 0, 0, 0, 0)",
            rusqlite::params![user_id],
        )?;
        tx.execute(
            "INSERT INTO totp (user_id, state, key_id, secret_sealed, digits, period, last_used_step, created_at) VALUES (?1, 'ready', 'k', ?2, 6, 30, 0, 0)",
            rusqlite::params![user_id, vec![0u8; 48]],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// `concurrency` threads, each on a connection of its own, run the service's write shape for
/// `duration`: read the user and its TOTP, then one immediate transaction with the conditional
/// user update, an event and the TOTP row. SQLite driven in place (rusqlite, prepared statements
/// kept), as the service's writer drives it. Answers every transaction's latency in µs and the
/// seconds taken.
fn ceiling_loop(
    path: &std::path::Path,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<u64>, f64)> {
    let started = Instant::now();
    let deadline = started + duration;
    let latencies = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|worker| {
                scope.spawn(move || -> anyhow::Result<Vec<u64>> {
                    let mut conn = ceiling_connection(path)?;
                    let mut latencies = vec![];
                    let mut n = worker as i64;
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let user_id = format!("ceiling-{}", n % CEILING_ROWS);
                        n += concurrency as i64;
                        ceiling_transaction(&mut conn, &user_id)?;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = vec![];
        for worker in workers {
            all.extend(
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a ceiling thread panicked"))??,
            );
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    Ok((latencies, started.elapsed().as_secs_f64()))
}

fn ceiling_transaction(conn: &mut rusqlite::Connection, user_id: &str) -> rusqlite::Result<()> {
    let (version, sequence): (i64, i64) = conn
        .prepare_cached("SELECT u.version, u.sequence, t.last_used_step FROM users u LEFT JOIN totp t ON t.user_id = u.user_id WHERE u.user_id = ?1")?
        .query_row(rusqlite::params![user_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let updated = tx
        .prepare_cached("UPDATE users SET sequence = ?2, change_date = ?3, version = version + 1 WHERE user_id = ?1 AND version = ?4")?
        .execute(rusqlite::params![user_id, sequence + 1, 0i64, version])?;
    if updated == 1 {
        tx.prepare_cached("INSERT INTO events (user_id, sequence, event_type, payload, resource_owner, creator, created_at) VALUES (?1, ?2, 'bench', '{}', 'bench', 'bench', 0)")?
            .execute(rusqlite::params![user_id, sequence + 1])?;
        tx.prepare_cached(
            "UPDATE totp SET last_used_step = last_used_step + 1 WHERE user_id = ?1",
        )?
        .execute(rusqlite::params![user_id])?;
    }
    tx.commit()
}

// One thread: the generator shares the machine with the service and the database, and on one
// thread it spends less CPU per request (no wake-ups across threads) than on two; it stays far
// below one core at the rates measured here.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::CeilingSqlite(args) => ceiling_sqlite(args).await,
        Command::Soak(args) => soak::soak(args).await,
    }
}
