//! The catalogue of metric families. Each module that records a metric describes its family here
//! once (name, Prometheus type, help), so that `/metrics` shows every family of the running
//! service from the first scrape, and names its help, without the exporter knowing the modules.

use std::sync::Mutex;

/// The Prometheus type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

static FAMILIES: Mutex<Vec<Family>> = Mutex::new(Vec::new());

/// Adds `family` to the catalogue (again is harmless).
pub fn describe(family: Family) {
    let mut families = FAMILIES.lock().unwrap_or_else(|p| p.into_inner());
    if !families.contains(&family) {
        families.push(family);
    }
}

/// Every family described so far.
pub fn families() -> Vec<Family> {
    FAMILIES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
