//! The log of database outages: one line when the database stops answering, one when it answers
//! again (with the count of requests refused meanwhile), instead of one line per refused request
//! (a ten-second outage under load would otherwise write tens of thousands).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::error::{Code, Error, Rejection};

/// Whether the database is away, and how many requests it has refused meanwhile.
#[derive(Debug, Default)]
pub struct OutageLog {
    away: AtomicBool,
    refused: AtomicU64,
}

impl OutageLog {
    /// Notes the outcome of one storage operation.
    pub fn note<T>(&self, outcome: &Result<T, Error>) {
        match outcome {
            Err(Error::Unavailable(cause)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                if !self.away.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        %cause,
                        "database unreachable: requests are answered with code 14 until it is back"
                    );
                }
            }
            // A full queue, a timeout or an unexpected failure says nothing either way.
            Err(Error::Rejected(Rejection {
                code: Code::ResourceExhausted | Code::DeadlineExceeded,
                ..
            }))
            | Err(Error::Internal(_)) => {}
            // An answer, or a refusal decided on what the database answered.
            _ => {
                if self.away.load(Ordering::Relaxed) && self.away.swap(false, Ordering::AcqRel) {
                    let refused = self.refused.swap(0, Ordering::Relaxed);
                    tracing::warn!(refused, "database reachable again");
                }
            }
        }
    }

    /// Whether the database is away (as the last operation found).
    pub fn is_away(&self) -> bool {
        self.away.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_begins_once_counts_its_refusals_and_ends_once() {
        let log = OutageLog::default();
        let away: Result<(), Error> = Err(Error::Unavailable("connection refused".into()));
        log.note(&Ok::<(), Error>(()));
        assert!(!log.is_away());
        for _ in 0..3 {
            log.note(&away);
        }
        assert!(log.is_away());
        assert_eq!(log.refused.load(Ordering::Relaxed), 3);
        log.note::<()>(&Err(Error::Rejected(super::super::error::OVERLOADED)));
        assert!(log.is_away(), "a full queue does not end an outage");
        log.note(&Ok::<(), Error>(()));
        assert!(!log.is_away());
        assert_eq!(log.refused.load(Ordering::Relaxed), 0);
    }
}
