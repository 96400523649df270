//! Checkers of membership: what must hold all the time, and what must hold after healing.
//!
//! Safety, checked on every event and every sample of the views:
//! - `known-incarnation`: a view or event only names incarnations that were really started;
//! - `self-view`: a running node sees itself live, as its current incarnation;
//! - `left-after-leaving`: a node is only reported `Left` after it was reported `Leaving`;
//! - `no-false-failure`: a node that is running is never reported `Failed` while the network
//!   has been free of faults for a whole quiet window (the failure detector's horizon).
//!
//! Liveness of failure detection, checked on every sample:
//! - `failure-detected`: a node that crashed and stayed down past the detection deadline has
//!   been reported `Failed` by every observer that saw it live when it crashed and is still
//!   running (as the same incarnation).
//!
//! Liveness, checked by the runner after the heal: every running node sees exactly the
//! running incarnations live and `up`, and nothing else live ([`agreement`]).
//!
//! Every violation says what was seen, when and by whom.

use std::collections::{BTreeMap, BTreeSet};

use shoal::membership::{MembershipEvent, MembershipView, NodeStatus};

use crate::cluster::SimCluster;

/// A checker's complaint.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Seconds since the start of the run.
    pub at: f64,
    pub checker: &'static str,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] t={:.3}s: {}", self.checker, self.at, self.what)
    }
}

/// How long one crash took to be noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub node: String,
    pub crashed_at: f64,
    /// Seconds after the crash, per observer that reported it.
    pub by: BTreeMap<String, f64>,
    /// Observers that saw it live at the crash.
    pub expected: BTreeSet<String>,
    /// Seconds after the crash by which every expected observer must have reported it.
    pub deadline: f64,
    /// The observers' generations at the crash (an observer that restarted since cannot
    /// report it).
    pub observer_generations: BTreeMap<String, u64>,
    pub(crate) checked: bool,
    /// The node started again (a new incarnation) before the deadline: observers may have
    /// seen that first, which is as good as a detection.
    pub(crate) back: bool,
}

impl Detection {
    pub fn complete(&self) -> bool {
        self.expected.iter().all(|o| self.by.contains_key(o))
    }

    /// How many of the expected observers reported it.
    pub fn reported(&self) -> usize {
        self.expected
            .iter()
            .filter(|o| self.by.contains_key(*o))
            .count()
    }
}

pub struct MembershipChecker {
    violations: Vec<Violation>,
    incarnations: BTreeSet<(String, u64)>,
    leaving: BTreeSet<(String, String, u64)>,
    /// Seconds of fault-free network after which a running node must not be reported failed.
    quiet_window: f64,
    /// A crashed node down longer than this must have been reported by every observer, when
    /// the network had been fault-free for the quiet window before the crash...
    detection_deadline: f64,
    /// ... and this long when it had not (the detector's mean interval may be inflated by
    /// the faults, up to its cap).
    faulty_detection_deadline: f64,
    detections: Vec<(u64, Detection)>,
}

impl MembershipChecker {
    pub fn new(quiet_window: f64, detection_deadline: f64, faulty_detection_deadline: f64) -> Self {
        Self {
            violations: Vec::new(),
            incarnations: BTreeSet::new(),
            leaving: BTreeSet::new(),
            quiet_window,
            detection_deadline,
            faulty_detection_deadline,
            detections: Vec::new(),
        }
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn detections(&self) -> Vec<Detection> {
        self.detections.iter().map(|(_, d)| d.clone()).collect()
    }

    fn violate(&mut self, at: f64, checker: &'static str, what: String) {
        // One report per checker and subject is enough to act on.
        if self.violations.len() < 50 {
            self.violations.push(Violation { at, checker, what });
        }
    }

    /// A node started an incarnation.
    pub fn started(&mut self, name: &str, generation: u64) {
        self.incarnations.insert((name.to_string(), generation));
        for (g, d) in &mut self.detections {
            if d.node == name && *g != generation && !d.checked {
                d.back = true;
            }
        }
    }

    /// A node crashed; `observers` (name and generation) are the running nodes that saw it
    /// live and are expected to notice. `quiet` says whether the network had been fault-free
    /// for the quiet window.
    pub fn crashed(
        &mut self,
        at: f64,
        name: &str,
        generation: u64,
        observers: BTreeMap<String, u64>,
        quiet: bool,
    ) {
        self.detections.push((
            generation,
            Detection {
                node: name.to_string(),
                crashed_at: at,
                deadline: if quiet {
                    self.detection_deadline
                } else {
                    self.faulty_detection_deadline
                },
                by: BTreeMap::new(),
                expected: observers.keys().cloned().collect(),
                observer_generations: observers,
                checked: false,
                back: false,
            },
        ));
    }

    /// `name` stopped (crashed or left) before reporting earlier crashes: it is no longer
    /// expected to.
    pub fn observer_gone(&mut self, name: &str) {
        for (_, d) in &mut self.detections {
            if !d.by.contains_key(name) {
                d.expected.remove(name);
                d.observer_generations.remove(name);
            }
        }
    }

    pub fn on_event(
        &mut self,
        at: f64,
        observer: &str,
        event: &MembershipEvent,
        cluster: &SimCluster,
        last_network_fault: Option<f64>,
    ) {
        let m = event.member();
        if !self.incarnations.contains(&(m.name.clone(), m.generation)) {
            self.violate(
                at,
                "known-incarnation",
                format!(
                    "{observer} reported {} about {} generation {}, which was never started",
                    event.kind(),
                    m.name,
                    m.generation
                ),
            );
        }
        match event {
            MembershipEvent::Leaving { .. } => {
                self.leaving
                    .insert((observer.to_string(), m.name.clone(), m.generation));
            }
            MembershipEvent::Left { .. }
                if !self.leaving.contains(&(
                    observer.to_string(),
                    m.name.clone(),
                    m.generation,
                )) =>
            {
                self.violate(
                    at,
                    "left-after-leaving",
                    format!(
                        "{observer} reported {} left without having reported it leaving",
                        m.name
                    ),
                );
            }
            MembershipEvent::Failed { .. } => {
                for (generation, d) in &mut self.detections {
                    if d.node == m.name && *generation == m.generation {
                        d.by.entry(observer.to_string())
                            .or_insert(at - d.crashed_at);
                    }
                }
                let running = cluster.nodes.iter().any(|n| {
                    n.is_running() && n.name == m.name && n.generation == Some(m.generation)
                });
                let quiet_for = last_network_fault.map_or(at, |t| at - t);
                if running && quiet_for >= self.quiet_window {
                    self.violate(
                        at,
                        "no-false-failure",
                        format!(
                            "{observer} reported {} (generation {}) failed, but it was running and the network had been fault-free for {quiet_for:.1}s (quiet window {:.1}s)",
                            m.name, m.generation, self.quiet_window
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    /// Checks one sample of every running node's view.
    pub fn on_sample(&mut self, at: f64, views: &[(String, MembershipView)], cluster: &SimCluster) {
        self.check_detections(at, cluster);
        for (observer, view) in views {
            let me = cluster.nodes.iter().find(|n| &n.name == observer);
            let generation = me.and_then(|n| n.generation);
            match view.member(observer) {
                Some(m) if m.live && Some(m.generation) == generation => {}
                other => self.violate(
                    at,
                    "self-view",
                    format!("{observer} (generation {generation:?}) sees itself as {other:?}"),
                ),
            }
            for m in &view.members {
                if !self.incarnations.contains(&(m.name.clone(), m.generation)) {
                    self.violate(
                        at,
                        "known-incarnation",
                        format!(
                            "{observer}'s view holds {} generation {}, which was never started",
                            m.name, m.generation
                        ),
                    );
                }
            }
        }
    }
}

impl MembershipChecker {
    fn check_detections(&mut self, at: f64, cluster: &SimCluster) {
        let mut late = Vec::new();
        for (generation, d) in &mut self.detections {
            if d.checked || at - d.crashed_at < d.deadline {
                continue;
            }
            d.checked = true;
            // Back before the deadline (even if it has left again since).
            if d.back {
                continue;
            }
            let missing: Vec<String> =
                d.observer_generations
                    .iter()
                    .filter(|(o, g)| {
                        !d.by.contains_key(*o)
                            && cluster.nodes.iter().any(|n| {
                                &n.name == *o && n.is_running() && n.generation == Some(**g)
                            })
                    })
                    .map(|(o, _)| o.clone())
                    .collect();
            if !missing.is_empty() {
                late.push(format!(
                    "{} (generation {generation}) crashed at {:.1}s and is still down, but {} had not reported it failed after the {:.1}s detection deadline",
                    d.node,
                    d.crashed_at,
                    missing.join(", "),
                    d.deadline
                ));
            }
        }
        for what in late {
            self.violate(at, "failure-detected", what);
        }
    }
}

/// Whether every running node sees exactly the running incarnations live and `up`, and no
/// other incarnation live. `Err` says the first disagreement found.
pub fn agreement(views: &[(String, MembershipView)], cluster: &SimCluster) -> Result<(), String> {
    let expected: BTreeMap<&str, u64> = cluster
        .running()
        .filter_map(|n| Some((n.name.as_str(), n.generation?)))
        .collect();
    for (observer, view) in views {
        for (name, generation) in &expected {
            match view.member(name) {
                Some(m) if m.live && m.generation == *generation && m.status == NodeStatus::Up => {}
                Some(m) => {
                    return Err(format!(
                        "{observer} sees {name} as generation {} status {} live={} (running: generation {generation}, expected up and live)",
                        m.generation, m.status, m.live
                    ));
                }
                None => {
                    return Err(format!(
                        "{observer} does not know {name} (running, generation {generation})"
                    ));
                }
            }
        }
        for m in view.live() {
            if !expected.contains_key(m.name.as_str()) {
                return Err(format!(
                    "{observer} sees {} (generation {}) live, but it is not running",
                    m.name, m.generation
                ));
            }
        }
    }
    // The configuration: one newest epoch everywhere, holding exactly the running
    // incarnations.
    let running: BTreeSet<(&str, u64)> = expected.iter().map(|(n, g)| (*n, *g)).collect();
    let mut epoch = None;
    for (observer, view) in views {
        let Some(c) = &view.configuration else {
            return Err(format!("{observer} knows no committed configuration"));
        };
        if *epoch.get_or_insert(c.epoch) != c.epoch {
            return Err(format!(
                "{observer} knows epoch {}, another node epoch {}",
                c.epoch,
                epoch.unwrap_or_default()
            ));
        }
        let members: BTreeSet<(&str, u64)> = c
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.generation))
            .collect();
        if members != running {
            return Err(format!(
                "{observer}'s epoch {} holds {members:?}, the running incarnations are {running:?}",
                c.epoch
            ));
        }
    }
    Ok(())
}
