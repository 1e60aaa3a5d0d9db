//! Holds the record of answers against what the database kept, on whatever node is primary
//! after the run: every acknowledged command is there, nothing answered 14 is, no time step was
//! accepted twice, every lock came after exactly `MAX_ATTEMPTS` counted failures, and each
//! user's events run 1, 2, 3, … and agree with its user and TOTP rows.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;
use totp_service::domain::rules::events;

use crate::instances::MAX_ATTEMPTS;
use totp_client::life::{Answer, Outcome, Rpc};

/// Error ids of refused codes: each counted as a failed attempt, with a `check.failed` event.
const FAILED_ATTEMPT_IDS: [&str; 2] = ["EVENT-8isk2", "TOTP-Auw0a"];

/// What the audit found; `problems` must be empty.
#[derive(Debug, Default)]
pub struct Findings {
    pub users: usize,
    pub events: usize,
    pub locks: usize,
    /// Commands answered with success (or a counted refusal) whose event is not stored.
    pub acknowledged_but_missing: usize,
    /// Events stored beyond what was acknowledged, not explained by a call left without an
    /// answer.
    pub unavailable_but_applied: usize,
    /// Accepted codes whose step was not newer than one accepted before for the user.
    pub steps_accepted_twice: usize,
    /// Calls that got no answer (a killed instance, a cut connection) or code 4 (the service gave
    /// up waiting), whose command is therefore allowed to be either whole or absent.
    pub unanswered: usize,
    pub problems: Vec<String>,
}

/// What the answers say a user's log must hold.
#[derive(Default)]
struct Expected {
    /// Per event type, how many acknowledged commands append one.
    acknowledged: BTreeMap<&'static str, usize>,
    /// Write calls without an answer, or answered 4: each may or may not have appended its event.
    unanswered: usize,
    /// Steps of accepted codes, in the order sent.
    accepted_steps: Vec<i64>,
}

struct UserRow {
    state: String,
    sequence: i64,
    failed_attempts: i64,
}

struct TotpRow {
    state: String,
    last_used_step: Option<i64>,
}

pub async fn audit(db: &mut PgConnection, prefix: &str, answers: &[Answer]) -> Findings {
    let mut findings = Findings::default();
    let mut expected: HashMap<&str, Expected> = HashMap::new();
    for answer in answers {
        let entry = expected.entry(answer.user.as_str()).or_default();
        let event = match (&answer.outcome, answer.rpc) {
            (Outcome::Ok, Rpc::AddUser) => Some(events::USER_ADDED),
            (Outcome::Ok, Rpc::Register) => Some(events::OTP_ADDED),
            (Outcome::Ok, Rpc::Verify) => Some(events::OTP_VERIFIED),
            (Outcome::Ok, Rpc::Check) => Some(events::OTP_CHECK_SUCCEEDED),
            (Outcome::Refused { id, .. }, Rpc::Verify | Rpc::Check)
                if FAILED_ATTEMPT_IDS.contains(&id.as_str()) =>
            {
                Some(events::OTP_CHECK_FAILED)
            }
            (Outcome::TooSlow | Outcome::Other(_), rpc) if rpc.writes() => {
                entry.unanswered += 1;
                findings.unanswered += 1;
                None
            }
            _ => None,
        };
        if let Some(event) = event {
            *entry.acknowledged.entry(event).or_default() += 1;
        }
        if answer.outcome == Outcome::Ok && matches!(answer.rpc, Rpc::Verify | Rpc::Check) {
            entry
                .accepted_steps
                .push(answer.step.expect("codes carry their step"));
        }
    }

    let pattern = format!("{prefix}-%");
    let mut logs: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT user_id, sequence, event_type FROM events WHERE user_id LIKE $1 \
         ORDER BY user_id, sequence",
    )
    .bind(&pattern)
    .fetch_all(&mut *db)
    .await
    .unwrap();
    findings.events = rows.len();
    for (user, sequence, event_type) in rows {
        logs.entry(user).or_default().push((sequence, event_type));
    }
    let users: HashMap<String, UserRow> = sqlx::query_as::<_, (String, String, i64, i64)>(
        "SELECT user_id, state, sequence, failed_attempts FROM users WHERE user_id LIKE $1",
    )
    .bind(&pattern)
    .fetch_all(&mut *db)
    .await
    .unwrap()
    .into_iter()
    .map(|(user, state, sequence, failed_attempts)| {
        let row = UserRow {
            state,
            sequence,
            failed_attempts,
        };
        (user, row)
    })
    .collect();
    let totps: HashMap<String, TotpRow> = sqlx::query_as::<_, (String, String, Option<i64>)>(
        "SELECT user_id, state, last_used_step FROM totp WHERE user_id LIKE $1",
    )
    .bind(&pattern)
    .fetch_all(&mut *db)
    .await
    .unwrap()
    .into_iter()
    .map(|(user, state, last_used_step)| {
        let row = TotpRow {
            state,
            last_used_step,
        };
        (user, row)
    })
    .collect();
    findings.users = users.len();

    let no_log = Vec::new();
    let nothing_expected = Expected::default();
    let mut everyone: Vec<&str> = expected.keys().copied().collect();
    everyone.extend(logs.keys().map(String::as_str));
    everyone.sort_unstable();
    everyone.dedup();
    for user in everyone {
        let log = logs.get(user).unwrap_or(&no_log);
        let expected = expected.get(user).unwrap_or(&nothing_expected);
        check_counts(&mut findings, user, log, expected);
        check_steps(&mut findings, user, expected);
        check_projection(
            &mut findings,
            user,
            log,
            expected,
            users.get(user),
            totps.get(user),
        );
    }
    findings
}

/// Acknowledged ≤ stored ≤ acknowledged + unanswered, per event type.
fn check_counts(findings: &mut Findings, user: &str, log: &[(i64, String)], expected: &Expected) {
    let mut stored: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, event_type) in log {
        *stored.entry(event_type.as_str()).or_default() += 1;
    }
    let mut excess = 0;
    for event_type in [
        events::USER_ADDED,
        events::OTP_ADDED,
        events::OTP_VERIFIED,
        events::OTP_CHECK_SUCCEEDED,
        events::OTP_CHECK_FAILED,
    ] {
        let acknowledged = expected.acknowledged.get(event_type).copied().unwrap_or(0);
        let kept = stored.remove(event_type).unwrap_or(0);
        if kept < acknowledged {
            findings.acknowledged_but_missing += acknowledged - kept;
            findings.problems.push(format!(
                "{user}: {acknowledged} × {event_type} acknowledged, {kept} stored"
            ));
        }
        excess += kept.saturating_sub(acknowledged);
    }
    if excess > expected.unanswered {
        findings.unavailable_but_applied += excess - expected.unanswered;
        findings.problems.push(format!(
            "{user}: {excess} events beyond the acknowledged commands, {} calls unanswered",
            expected.unanswered
        ));
    }
    stored.remove(events::USER_LOCKED);
    if !stored.is_empty() {
        findings.problems.push(format!(
            "{user}: events no call of the load appends: {stored:?}"
        ));
    }
}

/// Each accepted step newer than every one accepted before.
fn check_steps(findings: &mut Findings, user: &str, expected: &Expected) {
    for pair in expected.accepted_steps.windows(2) {
        if pair[1] <= pair[0] {
            findings.steps_accepted_twice += 1;
            findings.problems.push(format!(
                "{user}: step {} accepted after step {}",
                pair[1], pair[0]
            ));
        }
    }
}

/// Sequences 1..=n, locks after exactly MAX_ATTEMPTS failures and nothing counted after them,
/// and the rows as the log says.
fn check_projection(
    findings: &mut Findings,
    user: &str,
    log: &[(i64, String)],
    expected: &Expected,
    row: Option<&UserRow>,
    totp: Option<&TotpRow>,
) {
    let mut problem = |text: String| findings.problems.push(format!("{user}: {text}"));
    for (index, (sequence, _)) in log.iter().enumerate() {
        if *sequence != index as i64 + 1 {
            problem(format!("event {index} has sequence {sequence}"));
        }
    }
    let mut failures = 0;
    let mut locked = false;
    let mut totp_state = None;
    for (sequence, event_type) in log {
        match event_type.as_str() {
            t if t == events::OTP_CHECK_FAILED
                || t == events::OTP_CHECK_SUCCEEDED
                || t == events::OTP_VERIFIED =>
            {
                if locked {
                    problem(format!("{t} at {sequence} while locked"));
                }
                if t == events::OTP_CHECK_FAILED {
                    failures += 1;
                } else {
                    failures = 0;
                }
                if t == events::OTP_VERIFIED {
                    totp_state = Some("ready");
                }
            }
            t if t == events::USER_LOCKED => {
                if failures != i64::from(MAX_ATTEMPTS) {
                    problem(format!("locked at {sequence} after {failures} failures"));
                }
                locked = true;
                failures = 0;
            }
            t if t == events::OTP_ADDED => totp_state = Some("pending"),
            _ => {}
        }
    }
    let locks = log.iter().filter(|(_, t)| t == events::USER_LOCKED).count();
    let Some(row) = row else {
        if !log.is_empty() {
            problem("events without a user row".into());
        }
        return;
    };
    if row.sequence != log.len() as i64 {
        problem(format!(
            "row sequence {} but {} events",
            row.sequence,
            log.len()
        ));
    }
    let state = if locked { "locked" } else { "active" };
    if row.state != state || row.failed_attempts != failures {
        problem(format!(
            "row says {} with {} failures, the log {state} with {failures}",
            row.state, row.failed_attempts
        ));
    }
    if totp.map(|t| t.state.as_str()) != totp_state {
        problem(format!(
            "TOTP row {:?}, the log says {totp_state:?}",
            totp.map(|t| &t.state)
        ));
    }
    if expected.unanswered == 0 {
        let last_accepted = expected.accepted_steps.iter().max().copied();
        let last_used = totp.and_then(|t| t.last_used_step);
        if last_used != last_accepted {
            problem(format!(
                "last used step {last_used:?}, last accepted {last_accepted:?}"
            ));
        }
    }
    findings.locks += locks;
}
