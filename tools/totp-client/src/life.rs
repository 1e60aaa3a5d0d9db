//! A mixed load (the HA tests' and the soak's): clients living users' whole lives over REST
//! against every instance in turn, and the record of every answer (which instance, which call,
//! for which user and time step, when, how long, and what came back), which the HA tests hold
//! against the database and the soak sums up minute by minute.
//!
//! A life: AddHumanUser, RegisterTOTP, VerifyTOTPRegistration, the verified code replayed, a
//! fresh code checked, that one replayed, wrong codes until the lock, a fresh code refused for
//! the lock, GetUserByID. A call answered 14 (or not at all) is sent again, to the next
//! instance, with a code for the time of sending; every call is an entry in the record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use totp_service::domain::totp::{self, Algorithm, Secret};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {
    AddUser,
    Register,
    Verify,
    Check,
    GetUser,
}

impl Rpc {
    /// Whether the call writes (and so needs the primary).
    pub fn writes(self) -> bool {
        self != Rpc::GetUser
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ok,
    /// An error body with a ZITADEL code other than 14, and its error id.
    Refused {
        code: i64,
        id: String,
    },
    /// Code 14 (HTTP 503): not done, safe to send again.
    Unavailable,
    /// Code 4 (HTTP 504): the service gave up waiting; the command may or may not have happened.
    TooSlow,
    /// Anything else: another status, a body that is not the contract's, no answer in time, a
    /// connection that failed.
    Other(String),
}

#[derive(Clone, Debug)]
pub struct Answer {
    pub instance: usize,
    pub rpc: Rpc,
    pub user: String,
    /// The time step of the code sent (Verify and Check).
    pub step: Option<i64>,
    pub sent: Instant,
    pub took: Duration,
    pub outcome: Outcome,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Load {
    /// The instances' `http://host:port`, called in turn.
    pub bases: Vec<String>,
    /// A token with user.write, user.read, user.credential.write and session.write everywhere.
    pub token: String,
    pub clients: usize,
    /// Users are named `{prefix}-{client}-{n}`.
    pub prefix: String,
    pub until: Instant,
    /// The service's TOTP_MAX_ATTEMPTS: wrong codes sent until the lock.
    pub max_attempts: u32,
    /// The service's TOTP_REQUEST_TIMEOUT (the clients wait 5 s longer, so that a hang shows as a
    /// missing answer rather than a cut).
    pub request_timeout: Duration,
    /// Each client's time between calls; `None` sends the next call once the last is answered.
    pub pace: Option<Duration>,
}

/// Runs `load` until its end; every answer goes to `record` as it comes.
pub async fn run(load: Load, record: Arc<Mutex<Vec<Answer>>>) {
    let http = reqwest::Client::builder()
        .timeout(load.request_timeout + Duration::from_secs(5))
        .pool_max_idle_per_host(load.clients)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..load.clients)
        .map(|index| {
            let mut client = Client {
                http: http.clone(),
                load: load.clone(),
                turn: index,
                pace: load.pace.map(|pace| {
                    let mut ticks = tokio::time::interval(pace);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ticks
                }),
                record: record.clone(),
            };
            let prefix = format!("{}-{index}", load.prefix);
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < client.load.until {
                    client.live(&format!("{prefix}-{n}")).await;
                    n += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

struct Client {
    http: reqwest::Client,
    load: Load,
    /// Which instance the next call goes to (round robin).
    turn: usize,
    pace: Option<tokio::time::Interval>,
    record: Arc<Mutex<Vec<Answer>>>,
}

/// Where a call goes and what it carries.
struct Call {
    rpc: Rpc,
    user: String,
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
    step: Option<i64>,
}

impl Client {
    /// One user's life, cut short when the run ends.
    async fn live(&mut self, user: &str) -> Option<()> {
        let body = json!({
            "userId": user,
            "organization": {"orgId": "ha"},
            "profile": {"givenName": "H", "familyName": "A"},
            "email": {"email": format!("{user}@example.com")},
        });
        self.until_answered(|| post(Rpc::AddUser, user, "/v2/users/human".into(), body.clone()))
            .await?;
        let (_, registered) = self
            .until_answered(|| {
                post(
                    Rpc::Register,
                    user,
                    format!("/v2/users/{user}/totp"),
                    json!({}),
                )
            })
            .await?;
        let secret = Secret::from_base32(registered?["secret"].as_str()?)?;

        let mut last_used = None;
        let verified = self
            .send_code(user, Rpc::Verify, &secret, || Some(now_step() - 1))
            .await?;
        last_used = last_used.max(verified);
        // Replays and wrong codes each count one failed attempt; a success starts the count
        // again. Replay, success, replay, then wrong codes up to the lock.
        self.send_code(user, Rpc::Check, &secret, || last_used)
            .await?;
        let checked = self
            .send_code(user, Rpc::Check, &secret, || fresh_step(last_used))
            .await?;
        last_used = last_used.max(checked);
        self.send_code(user, Rpc::Check, &secret, || last_used)
            .await?;
        for _ in 1..self.load.max_attempts {
            self.send_wrong_code(user, &secret).await?;
        }
        self.send_code(user, Rpc::Check, &secret, || fresh_step(last_used))
            .await?;
        self.until_answered(|| Call {
            rpc: Rpc::GetUser,
            user: user.to_owned(),
            method: reqwest::Method::GET,
            path: format!("/v2/users/{user}"),
            body: None,
            step: None,
        })
        .await?;
        Some(())
    }

    /// Sends the code of the step `pick` chooses at the moment of sending; the step if it was
    /// accepted.
    async fn send_code(
        &mut self,
        user: &str,
        rpc: Rpc,
        secret: &Secret,
        pick: impl Fn() -> Option<i64>,
    ) -> Option<Option<i64>> {
        let path = match rpc {
            Rpc::Verify => format!("/v2/users/{user}/totp/verify"),
            _ => format!("/v2/users/{user}/totp/check"),
        };
        let mut step = None;
        let (outcome, _) = self
            .until_answered(|| {
                let chosen = pick().unwrap_or_else(now_step);
                step = Some(chosen);
                Call {
                    step: Some(chosen),
                    ..post(
                        rpc,
                        user,
                        path.clone(),
                        json!({"code": code(secret, chosen)}),
                    )
                }
            })
            .await?;
        Some((outcome == Outcome::Ok).then_some(step).flatten())
    }

    /// A code that matches no step of the window.
    async fn send_wrong_code(&mut self, user: &str, secret: &Secret) -> Option<()> {
        let path = format!("/v2/users/{user}/totp/check");
        self.until_answered(|| {
            let now = now_step();
            let valid: Vec<String> = (now - 2..=now + 2).map(|s| code(secret, s)).collect();
            let wrong = (0..)
                .map(|n| format!("{:06}", (n * 7919) % 1_000_000))
                .find(|candidate| !valid.contains(candidate))
                .unwrap();
            post(Rpc::Check, user, path.clone(), json!({"code": wrong}))
        })
        .await?;
        Some(())
    }

    /// Sends the call `make` builds until it is answered other than with 14, 4 or a failed
    /// connection (each try to the next instance, 20 ms apart); that answer and its body. `None`
    /// when the run ended first.
    async fn until_answered(
        &mut self,
        mut make: impl FnMut() -> Call,
    ) -> Option<(Outcome, Option<Value>)> {
        loop {
            if Instant::now() >= self.load.until {
                return None;
            }
            let (outcome, body) = self.send(make()).await;
            match outcome {
                Outcome::Unavailable | Outcome::TooSlow | Outcome::Other(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => return Some((outcome, body)),
            }
        }
    }

    async fn send(&mut self, call: Call) -> (Outcome, Option<Value>) {
        if let Some(pace) = &mut self.pace {
            pace.tick().await;
        }
        let instance = self.turn % self.load.bases.len();
        self.turn += 1;
        let url = format!("{}{}", self.load.bases[instance], call.path);
        let mut request = self
            .http
            .request(call.method, url)
            .bearer_auth(&self.load.token);
        if let Some(body) = call.body {
            request = request.json(&body);
        }
        let sent = Instant::now();
        let (outcome, body) = match request.send().await {
            Err(error) => (Outcome::Other(format!("no answer: {error}")), None),
            Ok(response) => {
                let status = response.status();
                let body: Option<Value> = response.json().await.ok();
                (classify(status, body.as_ref()), body)
            }
        };
        let answer = Answer {
            instance,
            rpc: call.rpc,
            user: call.user,
            step: call.step,
            sent,
            took: sent.elapsed(),
            outcome: outcome.clone(),
        };
        self.record.lock().unwrap().push(answer);
        (outcome, body)
    }
}

fn post(rpc: Rpc, user: &str, path: String, body: Value) -> Call {
    Call {
        rpc,
        user: user.to_owned(),
        method: reqwest::Method::POST,
        path,
        body: Some(body),
        step: None,
    }
}

/// The contract's reading of an answer: 2xx is done; an error body's `code` and first detail's
/// id otherwise; 503 must carry code 14.
fn classify(status: reqwest::StatusCode, body: Option<&Value>) -> Outcome {
    if status.is_success() {
        return Outcome::Ok;
    }
    let code = body.and_then(|b| b["code"].as_i64());
    let id = body.and_then(|b| b["details"][0]["id"].as_str());
    match (status.as_u16(), code, id) {
        (503, Some(14), _) => Outcome::Unavailable,
        (504, Some(4), _) => Outcome::TooSlow,
        (400..=499, Some(code), Some(id)) if code != 14 => Outcome::Refused {
            code,
            id: id.to_owned(),
        },
        _ => Outcome::Other(format!("HTTP {status}: {body:?}")),
    }
}

pub fn now_step() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp::step_at(seconds as i64, totp::PERIOD)
}

/// The oldest step of the window not used yet (one after `last_used` at the earliest).
fn fresh_step(last_used: Option<i64>) -> Option<i64> {
    let oldest = now_step() - totp::SKEW_STEPS;
    Some(last_used.map_or(oldest, |used| (used + 1).max(oldest)))
}

fn code(secret: &Secret, step: i64) -> String {
    totp::code_for_step(secret, step, totp::DIGITS, Algorithm::Sha1)
}
