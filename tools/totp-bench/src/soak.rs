//! The soak: two (or more) instances under the mixed load of users' whole lives
//! ([`totp_client::life`]) at a steady rate for a long time, and, every interval, per instance:
//! requests per second, p99 latency, answers that were neither success nor a refusal the life
//! expects, resident memory, open file descriptors and database connections. At the end the
//! table, and whether memory, descriptors and connections stayed flat after the warm-up (the
//! last third of the rows at most 10 % above the first third).
//!
//! Usually run by `scripts/soak.sh`, which starts a Patroni cluster and the instances.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use totp_client::life::{self, Answer, Load, Outcome};
use totp_service::config::parse_duration;

#[derive(clap::Args)]
pub struct SoakArgs {
    /// Base URL of each instance (repeat the flag).
    #[arg(long, required = true)]
    target: Vec<String>,
    /// Process id of each instance, in the order of `--target`.
    #[arg(long, required = true)]
    pid: Vec<u32>,
    /// A token with user.write, user.read, user.credential.write and session.write everywhere.
    #[arg(long, env = "TOTP_BENCH_TOKEN")]
    token: String,
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    interval: Duration,
    /// Rows before the one the later rows are compared with.
    #[arg(long, default_value_t = 3)]
    warm_up_rows: usize,
    /// Requests per second in all; without it, the peak is measured first (closed loop,
    /// `--calibrate` long) and half of it is used.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    calibrate: Duration,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// The services' TOTP_MAX_ATTEMPTS.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// The services' TOTP_REQUEST_TIMEOUT.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
}

/// One row of the table.
struct Row {
    minute: f64,
    instance: usize,
    per_second: f64,
    p99_ms: f64,
    /// Answers neither success nor a refusal (14, 4, a failed connection, anything else).
    failed: usize,
    rss_mib: f64,
    descriptors: usize,
    connections: f64,
}

pub async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.target.len() == args.pid.len(),
        "one --pid per --target"
    );
    let load = |prefix: &str, until: Instant, pace: Option<Duration>| Load {
        bases: args.target.clone(),
        token: args.token.clone(),
        clients: args.clients,
        prefix: prefix.to_owned(),
        until,
        max_attempts: args.max_attempts,
        request_timeout: args.request_timeout,
        pace,
    };
    let run_tag = format!("soak{}", rand::random::<u32>());
    let rate = match args.rate {
        Some(rate) => rate,
        None => {
            let record = Arc::default();
            let until = Instant::now() + args.calibrate;
            life::run(
                load(&format!("{run_tag}-peak"), until, None),
                Arc::clone(&record),
            )
            .await;
            let answers = record.lock().unwrap().len();
            let peak = answers as f64 / args.calibrate.as_secs_f64();
            println!(
                "peak {peak:.0} requests/s (closed loop, {} clients); the soak runs at half",
                args.clients
            );
            peak / 2.0
        }
    };
    let pace = Duration::from_secs_f64(args.clients as f64 / rate);
    let started = Instant::now();
    let record: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let running = tokio::spawn(life::run(
        load(&run_tag, started + args.duration, Some(pace)),
        Arc::clone(&record),
    ));
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    while started.elapsed() < args.duration {
        ticks.tick().await;
        let answers = std::mem::take(&mut *record.lock().unwrap());
        for (instance, (target, pid)) in args.target.iter().zip(&args.pid).enumerate() {
            let row = measure(
                &http,
                instance,
                target,
                *pid,
                &answers,
                started,
                args.interval,
            )
            .await?;
            print_row(&row);
            rows.push(row);
        }
    }
    running.await?;
    println!(
        "\nrate asked {rate:.0} requests/s in all, {} clients",
        args.clients
    );
    print_table(&rows);
    judge(&rows, args.target.len(), args.warm_up_rows)
}

async fn measure(
    http: &reqwest::Client,
    instance: usize,
    target: &str,
    pid: u32,
    answers: &[Answer],
    started: Instant,
    interval: Duration,
) -> anyhow::Result<Row> {
    let mine: Vec<&Answer> = answers.iter().filter(|a| a.instance == instance).collect();
    let mut latencies: Vec<Duration> = mine.iter().map(|a| a.took).collect();
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    let failed = mine
        .iter()
        .filter(|a| !matches!(a.outcome, Outcome::Ok | Outcome::Refused { .. }))
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("instance {instance} (pid {pid}) is gone"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let metrics = http
        .get(format!("{target}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let connections = metrics
        .lines()
        .filter(|l| l.starts_with("totp_db_connections"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok(Row {
        minute: started.elapsed().as_secs_f64() / 60.0,
        instance,
        per_second: mine.len() as f64 / interval.as_secs_f64(),
        p99_ms: p99.as_secs_f64() * 1000.0,
        failed,
        rss_mib: rss_kib / 1024.0,
        descriptors,
        connections,
    })
}

const HEADER: &str = "minute  instance  requests/s  p99 ms  failed  RSS MiB  fds  db connections";

fn format_row(row: &Row) -> String {
    format!(
        "{:>6.1}  {:>8}  {:>10.0}  {:>6.1}  {:>6}  {:>7.1}  {:>3}  {:>14}",
        row.minute,
        row.instance,
        row.per_second,
        row.p99_ms,
        row.failed,
        row.rss_mib,
        row.descriptors,
        row.connections
    )
}

fn print_row(row: &Row) {
    println!("{}", format_row(row));
}

fn print_table(rows: &[Row]) {
    println!("{HEADER}");
    for row in rows {
        println!("{}", format_row(row));
    }
}

/// A column the soak watches for growth, and how to read it from a row.
type Measure = (&'static str, fn(&Row) -> f64);

/// Flat after the warm-up: per instance, the mean of the last third of the rows after the
/// warm-up at most 10 % above the mean of the first third, for RSS, descriptors and
/// connections (means, because descriptors come and go with the clients' connections); and no
/// failed answers.
fn judge(rows: &[Row], instances: usize, warm_up_rows: usize) -> anyhow::Result<()> {
    let mut verdict = Ok(());
    for instance in 0..instances {
        let after: Vec<&Row> = rows
            .iter()
            .filter(|r| r.instance == instance)
            .skip(warm_up_rows)
            .collect();
        anyhow::ensure!(
            !after.is_empty(),
            "no rows after the warm-up for instance {instance}"
        );
        let third = (after.len() / 3).max(1);
        let measures: [Measure; 3] = [
            ("RSS MiB", |r| r.rss_mib),
            ("file descriptors", |r| r.descriptors as f64),
            ("database connections", |r| r.connections),
        ];
        for (name, of) in measures {
            let mean = |rows: &[&Row]| rows.iter().map(|r| of(r)).sum::<f64>() / rows.len() as f64;
            let early = mean(&after[..third]);
            let late = mean(&after[after.len() - third..]);
            let growth = if early > 0.0 {
                (late / early - 1.0) * 100.0
            } else {
                0.0
            };
            println!(
                "instance {instance}: {name}: {early:.1} early after the warm-up, {late:.1} at the end ({growth:+.1} %)"
            );
            if growth > 10.0 {
                verdict = Err(anyhow::anyhow!(
                    "instance {instance}: {name} grew {growth:.1} %"
                ));
            }
        }
        let failed: usize = rows
            .iter()
            .filter(|r| r.instance == instance)
            .map(|r| r.failed)
            .sum();
        println!("instance {instance}: {failed} answers neither success nor an expected refusal");
        if failed > 0 {
            verdict = Err(anyhow::anyhow!(
                "instance {instance}: {failed} failed answers"
            ));
        }
    }
    verdict
}
