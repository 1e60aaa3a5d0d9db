//! The service on a highly available Postgres: a Patroni cluster (etcd, two nodes in synchronous
//! mode, HAProxy in front; `scripts/ha-cluster.sh`) and two service instances on it, under 32
//! clients living users' whole lives, while the primary is killed, switched over, or the whole
//! cluster stops, or one service instance is killed. Afterwards the answers are held against the
//! database (see `audit`).
//!
//! Run by `scripts/ha-test.sh` (from `scripts/test.sh`): `cargo test --features ha-tests --test ha`.

mod audit;
mod cluster;
mod instances;

use std::time::{Duration, Instant};

use audit::Findings;
use cluster::Cluster;
use instances::{Instances, MAX_ATTEMPTS, REQUEST_TIMEOUT};
use totp_client::life::{self, Answer, Load, Outcome};

const CLIENTS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_under_load_and_nothing_acknowledged_is_lost() {
    let cluster = Cluster::up().await;
    let instances = Instances::start(2, &cluster.url);
    let started = Instant::now();
    let (answers, killed_at) = tokio::join!(
        run_load(&instances, "failover", started + Duration::from_secs(45)),
        async {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let at = Instant::now();
            let node = cluster.kill_primary().await;
            println!(
                "killed the postmaster of {node} at {:.1} s",
                (at - started).as_secs_f64()
            );
            at
        }
    );
    let summary = Summary::of(&answers, killed_at);
    summary.print("failover");
    for instance in 0..2 {
        let lines = instances.warnings_and_errors(instance);
        println!(
            "failover: instance {instance} logged {} warnings and errors, the first: {:?}",
            lines.len(),
            lines.first()
        );
        let in_doubt = instances
            .samples(instance, "totp_db_in_doubt_writes_total")
            .await;
        println!("failover: instance {instance}: in-doubt writes {in_doubt:?}");
    }
    let findings = audit_after(&cluster, "failover", &answers).await;
    summary.assert_every_answer_is_of_the_contract();
    assert!(
        summary.too_slow.is_empty(),
        "code 4: {:?}",
        summary.too_slow
    );
    for (instance, (_, served_again)) in summary.gaps.iter().enumerate() {
        assert!(
            *served_again <= Duration::from_secs(10),
            "instance {instance} served again only {served_again:?} after the kill"
        );
    }
    assert_clean(&findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_under_load_is_over_within_two_seconds() {
    let cluster = Cluster::up().await;
    let instances = Instances::start(2, &cluster.url);
    let started = Instant::now();
    let (answers, switched_at) = tokio::join!(
        run_load(&instances, "switchover", started + Duration::from_secs(25)),
        async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let at = Instant::now();
            cluster.switchover().await;
            at
        }
    );
    let summary = Summary::of(&answers, switched_at);
    summary.print("switchover");
    let findings = audit_after(&cluster, "switchover", &answers).await;
    summary.assert_every_answer_is_of_the_contract();
    assert!(
        summary.too_slow.is_empty(),
        "code 4: {:?}",
        summary.too_slow
    );
    for (instance, (gap, _)) in summary.gaps.iter().enumerate() {
        assert!(
            *gap <= Duration::from_secs(2),
            "instance {instance} served no write for {gap:?} during the switchover"
        );
    }
    assert_clean(&findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_outage_is_answered_14_at_once_and_served_again_within_a_second() {
    let cluster = Cluster::up().await;
    let instances = Instances::start(2, &cluster.url);
    let started = Instant::now();
    let http = reqwest::Client::new();
    let (answers, (outage, back_at, readiness)) = tokio::join!(
        run_load(&instances, "outage", started + Duration::from_secs(30)),
        async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            cluster.stop_all().await;
            let stopped_at = Instant::now();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut readiness = Vec::new();
            for base in instances.bases() {
                let response = http.get(format!("{base}/readyz")).send().await.unwrap();
                readiness.push(response.status().as_u16());
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            let restarting_at = Instant::now();
            let (_, back_at) = tokio::join!(
                cluster.start_all(),
                cluster.writable_at(Duration::from_secs(60))
            );
            (stopped_at..restarting_at, back_at, readiness)
        }
    );
    println!(
        "outage: nodes stopped at {:.1} s, started again at {:.1} s, a primary writable again at {:.1} s, /readyz meanwhile {readiness:?}",
        (outage.start - started).as_secs_f64(),
        (outage.end - started).as_secs_f64(),
        (back_at - started).as_secs_f64()
    );
    assert_eq!(readiness, [503, 503], "/readyz while no database answers");

    // In flight when the nodes stopped, a write is in doubt until a primary answers again; every
    // command sent later, until the nodes start again, must be answered 14 at once.
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.rpc.writes() && outage.contains(&a.sent))
        .collect();
    let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
    let not_14: Vec<&&Answer> = during
        .iter()
        .filter(|a| a.outcome != Outcome::Unavailable)
        .collect();
    println!(
        "outage: {} commands sent while stopped, the slowest answered in {slowest:?}",
        during.len()
    );
    assert!(!during.is_empty());
    assert!(
        not_14.is_empty(),
        "answered other than 14 during the outage: {not_14:?}"
    );
    assert!(
        slowest <= Duration::from_secs(1),
        "a command waited {slowest:?} during the outage"
    );
    for instance in 0..2 {
        let served =
            first_write_served(&answers, instance, back_at).expect("served again after the outage");
        println!("outage: instance {instance} served again {served:?} after the primary was back");
        assert!(
            served <= Duration::from_secs(1),
            "instance {instance} took {served:?}"
        );
    }
    let summary = Summary::of(&answers, outage.start);
    summary.print("outage");
    let findings = audit_after(&cluster, "outage", &answers).await;
    summary.assert_every_answer_is_of_the_contract();
    // Code 4 only for writes already sent when the nodes stopped: in doubt until a primary is
    // back, they wait for it as long as the request may take.
    let late: Vec<&Answer> = summary
        .too_slow
        .iter()
        .filter(|a| a.sent >= outage.start)
        .collect();
    assert!(
        late.is_empty(),
        "code 4 for commands sent during the outage: {late:?}"
    );
    assert_clean(&findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_instance_leaves_the_other_serving_and_its_commands_whole_or_absent() {
    let cluster = Cluster::up().await;
    let mut instances = Instances::start(2, &cluster.url);
    let started = Instant::now();
    let load = load_on(&instances, "instance", started + Duration::from_secs(25));
    let killed_at = std::sync::Mutex::new(None);
    let (answers, ()) = tokio::join!(run_with(load), async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        *killed_at.lock().unwrap() = Some(Instant::now());
        instances.kill(1);
    });
    let killed_at = killed_at.into_inner().unwrap().unwrap();
    let summary = Summary::of(&answers, killed_at);
    summary.print("instance kill");
    let survivor: Vec<&Answer> = answers.iter().filter(|a| a.instance == 0).collect();
    let survivor_trouble: Vec<&&Answer> = survivor
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Unavailable | Outcome::Other(_)))
        .collect();
    assert!(
        survivor_trouble.is_empty(),
        "the surviving instance failed: {survivor_trouble:?}"
    );
    let served_after = survivor
        .iter()
        .filter(|a| a.sent > killed_at && a.outcome == Outcome::Ok)
        .count();
    println!(
        "instance kill: the survivor answered {served_after} calls with success after the kill"
    );
    assert!(
        served_after > 1000,
        "the survivor served {served_after} after the kill"
    );
    let killed_before: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.instance == 1 && a.sent + a.took < killed_at)
        .filter(|a| matches!(a.outcome, Outcome::Unavailable | Outcome::Other(_)))
        .collect();
    assert!(
        killed_before.is_empty(),
        "failures before the kill: {killed_before:?}"
    );
    let findings = audit_after(&cluster, "instance", &answers).await;
    println!(
        "instance kill: {} calls to the killed instance got no answer",
        findings.unanswered
    );
    assert_clean(&findings);
}

/// The load of every test: 32 clients living users' lives on both instances, sending as fast as
/// they are answered.
fn load_on(instances: &Instances, prefix: &str, until: Instant) -> Load {
    Load {
        bases: instances.bases(),
        token: instances.token.clone(),
        clients: CLIENTS,
        prefix: prefix.to_owned(),
        until,
        max_attempts: MAX_ATTEMPTS,
        request_timeout: REQUEST_TIMEOUT,
        pace: None,
    }
}

async fn run_load(instances: &Instances, prefix: &str, until: Instant) -> Vec<Answer> {
    run_with(load_on(instances, prefix, until)).await
}

/// Runs `load` to its end; every answer.
async fn run_with(load: Load) -> Vec<Answer> {
    let record = std::sync::Arc::default();
    life::run(load, std::sync::Arc::clone(&record)).await;
    std::mem::take(&mut *record.lock().unwrap())
}

/// The answers of one run, by outcome, with each instance's stretch without service.
struct Summary {
    answers: usize,
    ok: usize,
    refused: usize,
    unavailable: usize,
    too_slow: Vec<Answer>,
    other: Vec<Answer>,
    slowest: Duration,
    /// Per instance, the longest stretch without a successful write from a second before the
    /// disruption on: (its length, from the disruption to its end).
    gaps: Vec<(Duration, Duration)>,
}

impl Summary {
    fn of(answers: &[Answer], disrupted_at: Instant) -> Summary {
        let instances = answers.iter().map(|a| a.instance + 1).max().unwrap_or(0);
        let gaps = (0..instances)
            .map(|instance| {
                let mut served: Vec<Instant> = answers
                    .iter()
                    .filter(|a| a.instance == instance && a.rpc.writes())
                    .filter(|a| a.outcome == Outcome::Ok)
                    .map(|a| a.sent + a.took)
                    .filter(|at| *at + Duration::from_secs(1) >= disrupted_at)
                    .collect();
                served.sort_unstable();
                served
                    .windows(2)
                    .map(|pair| {
                        let end_after = pair[1].saturating_duration_since(disrupted_at);
                        (pair[1] - pair[0], end_after)
                    })
                    .max()
                    .unwrap_or((Duration::MAX, Duration::MAX))
            })
            .collect();
        let with = |matching: fn(&Outcome) -> bool| -> Vec<Answer> {
            answers
                .iter()
                .filter(|a| matching(&a.outcome))
                .cloned()
                .collect()
        };
        Summary {
            answers: answers.len(),
            ok: count(answers, |o| *o == Outcome::Ok),
            refused: count(answers, |o| matches!(o, Outcome::Refused { .. })),
            unavailable: count(answers, |o| *o == Outcome::Unavailable),
            too_slow: with(|o| *o == Outcome::TooSlow),
            other: with(|o| matches!(o, Outcome::Other(_))),
            slowest: answers.iter().map(|a| a.took).max().unwrap_or_default(),
            gaps,
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: {} answers: {} success, {} refused as the life expects, {} code 14, {} code 4, \
             {} other; slowest {:?}",
            self.answers,
            self.ok,
            self.refused,
            self.unavailable,
            self.too_slow.len(),
            self.other.len(),
            self.slowest,
        );
        for (instance, (gap, end)) in self.gaps.iter().enumerate() {
            println!(
                "{name}: instance {instance}: longest stretch without a successful write {gap:?}, \
                 ended {end:?} after the disruption began"
            );
        }
    }

    /// Success, a refusal with its code and id, or 14: no 13, no 500, no hang, no other body;
    /// each within the request timeout. Code 4 only where the caller allows it.
    fn assert_every_answer_is_of_the_contract(&self) {
        assert!(
            self.other.is_empty(),
            "answers outside the contract: {:?}",
            self.other
        );
        assert!(
            self.slowest <= REQUEST_TIMEOUT + Duration::from_millis(500),
            "an answer took {:?}",
            self.slowest
        );
    }
}

fn count(answers: &[Answer], matching: impl Fn(&Outcome) -> bool) -> usize {
    answers.iter().filter(|a| matching(&a.outcome)).count()
}

/// How long after `since` instance `instance` first answered a write sent then or later with
/// success.
fn first_write_served(answers: &[Answer], instance: usize, since: Instant) -> Option<Duration> {
    answers
        .iter()
        .filter(|a| a.instance == instance && a.rpc.writes() && a.sent >= since)
        .filter(|a| a.outcome == Outcome::Ok)
        .map(|a| a.sent + a.took - since)
        .min()
}

/// Waits until the cluster is whole again, then audits on its primary and prints the findings.
async fn audit_after(cluster: &Cluster, prefix: &str, answers: &[Answer]) -> Findings {
    cluster.wait_healthy().await;
    let mut db = cluster.connect().await;
    let findings = audit::audit(&mut db, prefix, answers).await;
    println!(
        "{prefix}: audited {} users, {} events, {} locks: acknowledged but missing {}, \
         answered 14 but applied {}, steps accepted twice {}, calls without an answer {}",
        findings.users,
        findings.events,
        findings.locks,
        findings.acknowledged_but_missing,
        findings.unavailable_but_applied,
        findings.steps_accepted_twice,
        findings.unanswered
    );
    findings
}

fn assert_clean(findings: &Findings) {
    let shown: Vec<&String> = findings.problems.iter().take(20).collect();
    assert!(
        findings.problems.is_empty(),
        "{} problems, the first: {shown:#?}",
        findings.problems.len()
    );
    assert!(
        findings.users > 100,
        "the load made {} users",
        findings.users
    );
}
