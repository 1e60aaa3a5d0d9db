//! Abuse resistance under parallel load: no code accepted twice, exact lockout counting (also
//! across two service instances on one database), key rotation, size limits.

use std::sync::Arc;

use tokio::task::JoinSet;

use totp_service::crypto::KeyRing;
use totp_service::domain::clock::SystemClock;

use crate::support::*;

/// Outcome counts of a burst of calls: successes and each refusal id.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    ok: usize,
    refused: std::collections::BTreeMap<String, usize>,
}

impl Tally {
    fn add<T>(&mut self, result: Result<T, ApiError>) {
        match result {
            Ok(_) => self.ok += 1,
            Err(error) => {
                let id = error
                    .details
                    .first()
                    .map(|(id, _)| id.clone())
                    .unwrap_or_else(|| format!("code {} {}", error.code, error.message));
                *self.refused.entry(id).or_default() += 1;
            }
        }
    }

    fn refused(&self, id: &str) -> usize {
        self.refused.get(id).copied().unwrap_or(0)
    }
}

/// Sends `count` CheckTOTP calls at once, alternating over `instances`.
async fn burst_of_checks(instances: &[Arc<Harness>], user_id: &str, codes: Vec<String>) -> Tally {
    let mut calls = JoinSet::new();
    for (index, code) in codes.into_iter().enumerate() {
        let h = instances[index % instances.len()].clone();
        let user_id = user_id.to_owned();
        calls.spawn(async move { h.check_totp(&h.admin(), &user_id, &code).await.map(|_| ()) });
    }
    let mut tally = Tally::default();
    while let Some(result) = calls.join_next().await {
        tally.add(result.expect("call task"));
    }
    tally
}

fn options(backend: Backend, protocol: Protocol, max_attempts: u32) -> Options {
    let mut options = Options::new(backend, protocol);
    options.max_attempts = max_attempts;
    options
}

fn a_wrong_code(h: &Harness, secret: &str) -> String {
    let valid: Vec<String> = (-1..=1).map(|offset| h.code(secret, offset)).collect();
    ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|candidate| !valid.iter().any(|v| v == candidate))
        .unwrap()
        .to_owned()
}

pub async fn parallel_submissions_of_one_code_succeed_exactly_once(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Arc::new(Harness::start(options(backend, protocol, 0)).await);
    // Verify: one of 16 parallel verifications wins; the others find the TOTP already set up.
    let (user, secret) = h.user_with_pending_totp().await;
    let code = h.code(&secret, 0);
    let mut calls = JoinSet::new();
    for _ in 0..16 {
        let (h, user_id, code) = (h.clone(), user.id.clone(), code.clone());
        calls.spawn(async move { h.verify_totp(&h.admin(), &user_id, &code).await.map(|_| ()) });
    }
    let mut verify = Tally::default();
    while let Some(result) = calls.join_next().await {
        verify.add(result.unwrap());
    }
    assert_eq!(verify.ok, 1, "{verify:?}");
    assert_eq!(verify.refused("COMMAND-qx4ls"), 15, "{verify:?}");

    // Check: one of 24 parallel checks of the next step's code wins; the others are replays.
    let next = h.code(&secret, 1);
    let check = burst_of_checks(std::slice::from_ref(&h), &user.id, vec![next; 24]).await;
    assert_eq!(check.ok, 1, "{check:?}");
    assert_eq!(check.refused("TOTP-Auw0a"), 23, "{check:?}");
}

pub async fn parallel_wrong_codes_are_evaluated_exactly_max_attempts_times(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Arc::new(Harness::start(options(backend, protocol, 5)).await);
    let (user, secret) = h.user_with_ready_totp().await;
    let wrong = a_wrong_code(&h, &secret);
    let tally = burst_of_checks(std::slice::from_ref(&h), &user.id, vec![wrong; 64]).await;
    assert_eq!(tally.ok, 0, "{tally:?}");
    assert_eq!(tally.refused("EVENT-8isk2"), 5, "{tally:?}");
    assert_eq!(tally.refused("COMMAND-SF3fg"), 59, "{tally:?}");
    // register + verify = 3 events; 5 check.failed; 1 user.locked; nothing for the 59 refusals.
    let shown = h.get_user(&h.admin(), &user.id).await.unwrap();
    assert_eq!(shown.details.unwrap().sequence, 9);
    // A right code is not evaluated while locked.
    assert_eq!(
        h.check_totp(&h.admin(), &user.id, &h.code(&secret, 1))
            .await
            .unwrap_err()
            .details[0]
            .0,
        "COMMAND-SF3fg"
    );
}

pub async fn two_instances_on_one_database_count_exactly(backend: Backend, protocol: Protocol) {
    let first = Arc::new(Harness::start(options(backend, protocol, 5)).await);
    let second = Arc::new(first.start_beside(options(backend, protocol, 5)).await);
    let both = [first.clone(), second.clone()];

    let (user, secret) = first.user_with_ready_totp().await;
    let wrong = a_wrong_code(&first, &secret);
    let tally = burst_of_checks(&both, &user.id, vec![wrong; 64]).await;
    assert_eq!(tally.refused("EVENT-8isk2"), 5, "{tally:?}");
    assert_eq!(tally.refused("COMMAND-SF3fg"), 59, "{tally:?}");

    let (other, secret) = second.user_with_ready_totp().await;
    let next = first.code(&secret, 1);
    let tally = burst_of_checks(&both, &other.id, vec![next; 4]).await;
    assert_eq!(tally.ok, 1, "{tally:?}");
    assert_eq!(tally.refused("TOTP-Auw0a"), 3, "{tally:?}");
}

/// Each instance keeps its users' last known state in memory; a change made by the other
/// instance must win over it every time, whether the stale state would accept or refuse.
pub async fn an_instance_never_acts_on_a_state_another_instance_changed(
    backend: Backend,
    protocol: Protocol,
) {
    let first = Harness::start(options(backend, protocol, 5)).await;
    let second = first.start_beside(options(backend, protocol, 5)).await;
    let advance_both = || {
        first.advance_steps(1);
        second.advance_steps(1);
    };
    let (user, secret) = first.user_with_ready_totp().await;
    let check_at_first = |code: String| {
        let (first, user_id) = (&first, user.id.clone());
        async move { first.check_totp(&first.admin(), &user_id, &code).await }
    };

    // The first instance remembers the next step as unused; the second uses it.
    let code = first.code(&secret, 1);
    second
        .check_totp(&second.admin(), &user.id, &code)
        .await
        .unwrap();
    check_at_first(code).await.unwrap_err().assert_rejected(
        3,
        "TOTP-Auw0a",
        "Code was already used",
    );

    // The first remembers the user unlocked; the second locks: a valid code is not evaluated.
    advance_both();
    second.lock_user(&second.admin(), &user.id).await.unwrap();
    check_at_first(first.code(&secret, 1))
        .await
        .unwrap_err()
        .assert_rejected(9, "COMMAND-SF3fg", "User is locked");

    // The first remembers the user locked; the second unlocks: the valid code is accepted.
    second.unlock_user(&second.admin(), &user.id).await.unwrap();
    check_at_first(first.code(&secret, 1)).await.unwrap();

    // The first remembers a ready TOTP; the second removes it.
    advance_both();
    second.remove_totp(&second.admin(), &user.id).await.unwrap();
    check_at_first(first.code(&secret, 1))
        .await
        .unwrap_err()
        .assert_rejected(
            5,
            "COMMAND-3Mif9s",
            "Multifactor OTP (OneTimePassword) doesn't exist",
        );

    // Every change is in the log once: added, register, verify, check at the second, failed
    // check at the first, lock, unlock, check at the first, remove.
    let shown = second.get_user(&second.admin(), &user.id).await.unwrap();
    assert_eq!(shown.details.unwrap().sequence, 9);
}

pub async fn wrong_codes_on_verify_count_towards_the_lockout(backend: Backend, protocol: Protocol) {
    let h = Harness::start(options(backend, protocol, 2)).await;
    let (user, secret) = h.user_with_pending_totp().await;
    let wrong = a_wrong_code(&h, &secret);
    for _ in 0..2 {
        let error = h
            .verify_totp(&h.admin(), &user.id, &wrong)
            .await
            .unwrap_err();
        error.assert_rejected(3, "EVENT-8isk2", "Invalid code");
    }
    let error = h
        .verify_totp(&h.admin(), &user.id, &h.code(&secret, 0))
        .await
        .unwrap_err();
    error.assert_rejected(9, "COMMAND-SF3fg", "User is locked");
    h.unlock_user(&h.admin(), &user.id).await.unwrap();
    h.verify_totp(&h.admin(), &user.id, &h.code(&secret, 0))
        .await
        .unwrap();
}

pub async fn secrets_under_a_removed_key_fail_clearly_and_rekey_moves_them(
    backend: Backend,
    protocol: Protocol,
) {
    let key = |id: &str| KeyRing::generate_entry(&unique(id), &mut rand::thread_rng());
    let (old, new) = (key("old"), key("new"));
    let with_keys = |keys: String| {
        let mut o = Options::new(backend, protocol);
        o.encryption_keys = Some(keys);
        o
    };
    let before = Harness::start(with_keys(old.clone())).await;
    let (user, secret) = before.user_with_ready_totp().await;

    // The old key is gone from the configuration: a clear refusal, not a panic or a 500.
    let without_old = before.start_beside(with_keys(new.clone())).await;
    let error = without_old
        .check_totp(
            &without_old.admin(),
            &user.id,
            &without_old.code(&secret, 1),
        )
        .await
        .unwrap_err();
    error.assert_rejected(
        9,
        "CRYPTO-k3y0f",
        "The TOTP secret is sealed under a key that is not configured",
    );

    // Rotation: new key first, old still there; rekey re-seals under the new key, once.
    let rotation = before.config(&with_keys(format!("{new},{old}")));
    let service = totp_service::app::domain_service(&rotation, Arc::new(SystemClock))
        .await
        .unwrap();
    let first = service.rekey().await.unwrap();
    assert!(first.resealed >= 1, "{first:?}");
    let second = service.rekey().await.unwrap();
    assert_eq!(second.resealed, 0, "rekey is idempotent: {second:?}");

    // Now the new key alone opens it.
    without_old
        .check_totp(
            &without_old.admin(),
            &user.id,
            &without_old.code(&secret, 1),
        )
        .await
        .unwrap();
}

pub async fn requests_that_take_too_long_are_abandoned(backend: Backend, protocol: Protocol) {
    let h = Harness::start(options(backend, protocol, 5)).await;
    let (user, secret) = h.user_with_pending_totp().await;
    // The same data, served by an instance that waits for the database at most 300 ms.
    let mut impatient = options(backend, protocol, 5);
    impatient.request_timeout = std::time::Duration::from_millis(300);
    let slow = h.start_beside(impatient.clone()).await;

    // The database stalls: another session holds the lock the verification's write needs (the
    // user's row on Postgres, the write lock on SQLite) until the request has been abandoned.
    let url = h.config(&impatient).effective_database_url();
    sqlx::any::install_default_drivers();
    let mut stall = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let lock = match backend {
        Backend::Postgres | Backend::PostgresUncached => format!(
            "BEGIN; SELECT 1 FROM users WHERE user_id = '{}' FOR UPDATE",
            user.id
        ),
        Backend::Sqlite => "BEGIN IMMEDIATE".to_owned(),
    };
    sqlx::raw_sql(&lock).execute(&mut stall).await.unwrap();
    let error = slow
        .verify_totp(&slow.admin(), &user.id, &h.code(&secret, 0))
        .await
        .unwrap_err();
    error.assert_rejected(4, "COMMAND-t1me0", "The request took too long");
    if backend.is_postgres() {
        // Held past the writer's statement timeout (twice the request timeout): the stuck
        // group-commit statement gives up, so the abandoned verification never lands, and the
        // instance's writer works again at once.
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut stall).await.unwrap();
        let verified = slow
            .verify_totp(&slow.admin(), &user.id, &h.code(&secret, 1))
            .await
            .unwrap();
        assert_eq!(verified.details.unwrap().sequence, 3);
        return;
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut stall).await.unwrap();
    drop(stall);

    // The abandoned command runs to its end (or not at all) and leaves no lock behind: others
    // write at once, and the user is either still pending or verified, never between. It may
    // still be finishing, so state and sequence come from one read.
    let other = h.new_user().await;
    h.register_totp(&h.admin(), &other.id).await.unwrap();
    let listed = h.list_methods(&h.admin(), &user.id).await.unwrap();
    let sequence = listed.details.unwrap().processed_sequence;
    assert!(sequence == 2 || sequence == 3, "sequence {sequence}");
    assert_eq!(listed.auth_method_types.is_empty(), sequence == 2);
}

/// Waits until a session waits for a lock that the session `holder` holds.
async fn until_a_session_waits_for(watch: &mut sqlx::PgConnection, holder: i32) {
    until_sessions_wait_for(watch, holder, 1).await;
}

/// Waits until `count` sessions wait for locks that the session `holder` holds.
async fn until_sessions_wait_for(watch: &mut sqlx::PgConnection, holder: i32, count: i64) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(holder)
        .fetch_one(&mut *watch)
        .await
        .unwrap();
        if waiting >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{count} sessions never waited for session {holder}");
}

/// The server process id of a session.
async fn backend_pid(session: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(session)
        .await
        .unwrap()
}

/// Deadlocks Postgres found, as its statistics show them.
async fn deadlocks(watch: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&mut *watch)
        .await
        .unwrap()
}

/// Postgres only (the group-commit writer). Its statement locks a batch's users one by one; a
/// foreign session that locks them in another order can deadlock with it, and Postgres then
/// aborts the statement. The batch's commands must read and decide again, not fail.
pub async fn a_batch_aborted_to_break_a_deadlock_is_decided_again(
    backend: Backend,
    protocol: Protocol,
) {
    let h = Arc::new(Harness::start(options(backend, protocol, 5)).await);
    let (lone_blocker, lone_blocker_secret) = h.user_with_ready_totp().await;
    let (blocker, blocker_secret) = h.user_with_ready_totp().await;
    let mut pair = vec![
        h.user_with_ready_totp().await,
        h.user_with_ready_totp().await,
    ];
    // The writer locks in user id order: `first` before `second`.
    pair.sort_by(|x, y| x.0.id.cmp(&y.0.id));
    let (second, second_secret) = pair.pop().unwrap();
    let (first, first_secret) = pair.pop().unwrap();
    h.advance_steps(1);

    let url = h
        .config(&options(backend, protocol, 5))
        .effective_database_url();
    let connect = || <sqlx::PgConnection as sqlx::Connection>::connect(&url);
    let (mut watch, mut hold_blocker, mut foreign) = (
        connect().await.unwrap(),
        connect().await.unwrap(),
        connect().await.unwrap(),
    );
    // Whichever waiter runs its deadlock check first is aborted. The foreign session checks only
    // after a minute, so the writer (checking after the server's 1 s) is always the one chosen,
    // however late the machine delivers its timers.
    sqlx::raw_sql("SET deadlock_timeout = '1min'")
        .execute(&mut foreign)
        .await
        .unwrap();
    let deadlocks_before = deadlocks(&mut watch).await;
    let (blocker_session, foreign_session) = (
        backend_pid(&mut hold_blocker).await,
        backend_pid(&mut foreign).await,
    );
    let lock =
        |user_id: &str| format!("SELECT 1 FROM users WHERE user_id = '{user_id}' FOR UPDATE");

    // The writer waits on the blocker's row while both checks of the pair queue behind it, so
    // they travel together in the next statement.
    sqlx::raw_sql(&format!(
        "BEGIN; {}; {}",
        lock(&lone_blocker.id),
        lock(&blocker.id)
    ))
    .execute(&mut hold_blocker)
    .await
    .unwrap();
    sqlx::raw_sql(&format!("BEGIN; {}", lock(&second.id)))
        .execute(&mut foreign)
        .await
        .unwrap();
    let check = |user_id: String, code: String| {
        let h = h.clone();
        tokio::spawn(async move { h.check_totp(&h.admin(), &user_id, &code).await })
    };
    // With the user cache on, a write that finds the writer idle goes alone, on a connection of
    // its own: a first check, held up on its user's row, keeps that connection busy, so that the
    // blocker's check goes to the writer.
    let lone = matches!(backend, Backend::Postgres)
        .then(|| check(lone_blocker.id.clone(), h.code(&lone_blocker_secret, 0)));
    if lone.is_some() {
        until_a_session_waits_for(&mut watch, blocker_session).await;
    }
    let blocked = check(blocker.id.clone(), h.code(&blocker_secret, 0));
    let held_up = if lone.is_some() { 2 } else { 1 };
    until_sessions_wait_for(&mut watch, blocker_session, held_up).await;
    let checks = [
        check(first.id.clone(), h.code(&first_secret, 0)),
        check(second.id.clone(), h.code(&second_secret, 0)),
    ];
    // Time for both calls to reach the writer's queue, with room for a busy machine.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut hold_blocker)
        .await
        .unwrap();
    assert_eq!(blocked.await.unwrap().unwrap().details.unwrap().sequence, 4);
    if let Some(lone) = lone {
        assert_eq!(lone.await.unwrap().unwrap().details.unwrap().sequence, 4);
    }

    // The pair's statement holds `first` and waits for `second`, held by the foreign session,
    // which now asks for `first`: a cycle. The writer's deadlock check runs first and aborts its
    // own statement; the foreign session gets the row.
    until_a_session_waits_for(&mut watch, foreign_session).await;
    sqlx::raw_sql(&lock(&first.id))
        .execute(&mut foreign)
        .await
        .expect("Postgres aborts the writer's statement, not the foreign session's");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut foreign)
        .await
        .unwrap();

    // Both commands read and decided again, and their codes were accepted once.
    for (user, result) in [&first, &second].into_iter().zip(checks) {
        let checked = result.await.unwrap().unwrap();
        assert_eq!(checked.details.unwrap().sequence, 4, "{}", user.id);
        let succeeded: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE user_id = $1 AND event_type = 'user.human.mfa.otp.check.succeeded'",
        )
        .bind(&user.id)
        .fetch_one(&mut watch)
        .await
        .unwrap();
        assert_eq!(succeeded, 1, "{}", user.id);
    }
    // And it was a deadlock Postgres broke (its statistics arrive within a few seconds; tests
    // running beside this one cause none).
    for _ in 0..100 {
        if deadlocks(&mut watch).await > deadlocks_before {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("Postgres reported no deadlock");
}

pub async fn parallel_new_users_and_changes_do_not_starve_each_other(
    backend: Backend,
    protocol: Protocol,
) {
    // More parallel writers than pool connections (4 in tests), adding users and locking them.
    let h = Arc::new(Harness::start(options(backend, protocol, 5)).await);
    let mut calls = JoinSet::new();
    for _ in 0..24 {
        let h = h.clone();
        calls.spawn(async move {
            let user = h.new_user().await;
            h.lock_user(&h.admin(), &user.id).await.map(|_| ())
        });
    }
    let mut tally = Tally::default();
    while let Some(result) = calls.join_next().await {
        tally.add(result.unwrap());
    }
    assert_eq!(tally.ok, 24, "{tally:?}");
}

pub async fn parallel_changes_of_every_kind_each_land_whole(backend: Backend, protocol: Protocol) {
    // Postgres writes concurrent commands in shared statements (group commit): a burst mixing
    // every kind of change (TOTP put by verify and check, deleted by remove, kept by a wrong
    // code, two events for a lockout) must leave each user exactly as its own command says.
    let h = Arc::new(Harness::start(options(backend, protocol, 1)).await);
    let mut rounds = vec![];
    for _ in 0..6 {
        rounds.push((
            h.user_with_pending_totp().await,
            h.user_with_ready_totp().await,
            h.user_with_ready_totp().await.0,
            h.user_with_ready_totp().await,
        ));
    }
    // All 24 commands at once.
    let mut calls = JoinSet::new();
    for (round, setup) in rounds.into_iter().enumerate() {
        let ((pending, pending_secret), (ready, ready_secret), removed, (guesser, guesser_secret)) =
            setup;
        let h1 = h.clone();
        calls.spawn(async move {
            let code = h1.code(&pending_secret, 0);
            let verified = h1.verify_totp(&h1.admin(), &pending.id, &code).await;
            (
                round,
                "verify",
                pending.id,
                verified.map(|r| r.details.unwrap().sequence),
            )
        });
        let h2 = h.clone();
        calls.spawn(async move {
            let code = h2.code(&ready_secret, 1);
            let checked = h2.check_totp(&h2.admin(), &ready.id, &code).await;
            (
                round,
                "check",
                ready.id,
                checked.map(|r| r.details.unwrap().sequence),
            )
        });
        let h3 = h.clone();
        calls.spawn(async move {
            let gone = h3.remove_totp(&h3.admin(), &removed.id).await;
            (
                round,
                "remove",
                removed.id,
                gone.map(|r| r.details.unwrap().sequence),
            )
        });
        let h4 = h.clone();
        calls.spawn(async move {
            let wrong = a_wrong_code(&h4, &guesser_secret);
            let guessed = h4.check_totp(&h4.admin(), &guesser.id, &wrong).await;
            (
                round,
                "guess",
                guesser.id,
                guessed.map(|r| r.details.unwrap().sequence),
            )
        });
    }
    while let Some(done) = calls.join_next().await {
        let (round, kind, user, outcome) = done.unwrap();
        let listed = h.list_methods(&h.admin(), &user).await.unwrap();
        let sequence = listed.details.unwrap().processed_sequence;
        let has_totp = !listed.auth_method_types.is_empty();
        match kind {
            // register, verify (+ the user's creation): 3 events
            "verify" => {
                assert_eq!(outcome.unwrap(), 3, "round {round} {kind}");
                assert!(has_totp && sequence == 3, "round {round} {kind}");
            }
            "check" | "remove" => {
                assert_eq!(outcome.unwrap(), 4, "round {round} {kind}");
                assert_eq!(
                    (has_totp, sequence),
                    (kind == "check", 4),
                    "round {round} {kind}"
                );
            }
            // check.failed + user.locked (max attempts 1), then refused
            _ => {
                let error = outcome.unwrap_err();
                error.assert_rejected(3, "EVENT-8isk2", "Invalid code");
                assert!(has_totp && sequence == 5, "round {round} {kind}");
                let shown = h.get_user(&h.admin(), &user).await.unwrap();
                assert_eq!(
                    shown.user.unwrap().state,
                    totp_service::proto::zitadel::user::v2::UserState::Locked as i32
                );
            }
        }
    }
}
