//! The canary state machine driven by a fake clock and simulated traffic that is routed by
//! the current weights, as the controller drives it against a live endpoint.

use ghaf_rollout::canary::{
    self, Decision, ManualAction, Outcome, QualityWindow, StartArgs, request_bound,
};
use ghaf_serving::Variant;
use ghaf_serving::policy::{
    CANDIDATE_VARIANT, CanaryChecks, CanarySpec, LATENCY_BOUNDS_US, QualityCheck, RolloutState,
    RolloutStatus, VariantStats, latency_bucket,
};

/// How the stable and candidate versions respond.
#[derive(Clone, Copy)]
struct Behaviour {
    candidate_error_rate: f64,
    candidate_latency_us: u64,
    stable_latency_us: u64,
    candidate_accuracy: f64,
    stable_accuracy: f64,
}

const GOOD: Behaviour = Behaviour {
    candidate_error_rate: 0.0,
    candidate_latency_us: 800,
    stable_latency_us: 900,
    candidate_accuracy: 0.9,
    stable_accuracy: 0.9,
};

/// One labelled prediction: time, variant, model version, whether it was correct.
type LabelledRow = (i64, String, i64, bool);

struct Sim {
    now: i64,
    tick_ms: i64,
    spec: CanarySpec,
    state: RolloutState,
    variants: Vec<Variant>,
    stats: Vec<VariantStats>,
    behaviour: Behaviour,
    rng: u64,
    labelled: Vec<LabelledRow>,
    /// Requests the candidate served while it was routed.
    candidate_answered: u64,
    /// Most candidate requests within one tick.
    candidate_per_tick_max: u64,
    decisions: Vec<Decision>,
}

impl Sim {
    fn new(spec: CanarySpec, behaviour: Behaviour) -> Self {
        let now = 1_700_000_000_000;
        let (state, variants) = canary::start(
            &spec,
            StartArgs {
                id: "0190d1a0-0000-7000-8000-000000000001".into(),
                stable: ("fraud", 1),
                candidate: ("fraud", 2),
                stats: Vec::new(),
                now,
                actor: "alice",
                reason: "test".into(),
            },
        );
        Self {
            now,
            tick_ms: 1000,
            spec,
            state,
            variants,
            stats: Vec::new(),
            behaviour,
            rng: 0x9E37_79B9_7F4A_7C15,
            labelled: Vec::new(),
            candidate_answered: 0,
            candidate_per_tick_max: 0,
            decisions: Vec::new(),
        }
    }

    /// A fixed-seed xorshift generator, uniform in [0, 1).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn counters(&mut self, variant: &Variant) -> &mut VariantStats {
        let index = match self
            .stats
            .iter()
            .position(|s| s.variant == variant.name && s.version == variant.version)
        {
            Some(index) => index,
            None => {
                self.stats.push(VariantStats {
                    variant: variant.name.clone(),
                    model: variant.model.clone(),
                    version: variant.version,
                    latency_buckets: vec![0; LATENCY_BOUNDS_US.len() + 1],
                    ..VariantStats::default()
                });
                self.stats.len() - 1
            }
        };
        &mut self.stats[index]
    }

    /// Sends `requests` requests spread over one tick, each routed by the current weights.
    fn traffic(&mut self, requests: u64) {
        let total: u32 = self.variants.iter().map(|v| v.weight).sum();
        let mut candidate_this_tick = 0;
        for index in 0..requests {
            let time = self.now + (index as i64 * self.tick_ms) / requests.max(1) as i64;
            let point = self.random() * f64::from(total);
            let mut cumulative = 0.0;
            let mut chosen = self.variants[0].clone();
            for variant in &self.variants {
                cumulative += f64::from(variant.weight);
                if point < cumulative {
                    chosen = variant.clone();
                    break;
                }
            }
            let candidate = chosen.name == CANDIDATE_VARIANT;
            let behaviour = self.behaviour;
            let failed = candidate && self.random() < behaviour.candidate_error_rate;
            let latency = if candidate {
                behaviour.candidate_latency_us
            } else {
                behaviour.stable_latency_us
            };
            let accuracy = if candidate {
                behaviour.candidate_accuracy
            } else {
                behaviour.stable_accuracy
            };
            let correct = self.random() < accuracy;
            if candidate {
                self.candidate_answered += 1;
                candidate_this_tick += 1;
            }
            let counters = self.counters(&chosen);
            counters.requests += 1;
            if failed {
                counters.errors += 1;
            }
            counters.latency_buckets[latency_bucket(latency)] += 1;
            if !failed {
                self.labelled
                    .push((time, chosen.name.clone(), chosen.version, correct));
            }
        }
        self.candidate_per_tick_max = self.candidate_per_tick_max.max(candidate_this_tick);
        self.now += self.tick_ms;
    }

    fn quality(&self) -> Option<QualityWindow> {
        let check = self.spec.checks.quality.as_ref()?;
        let mut window = QualityWindow {
            metric: check.metric.clone(),
            ..QualityWindow::default()
        };
        let (mut candidate_correct, mut stable_correct) = (0u64, 0u64);
        for (time, variant, version, correct) in &self.labelled {
            if *time < self.state.window_started_at {
                continue;
            }
            if variant == CANDIDATE_VARIANT && *version == self.state.candidate_version {
                window.candidate_labels += 1;
                candidate_correct += u64::from(*correct);
            } else if *version == self.state.stable_version {
                window.stable_labels += 1;
                stable_correct += u64::from(*correct);
            }
        }
        let share = |correct: u64, total: u64| (total > 0).then(|| correct as f64 / total as f64);
        window.candidate = share(candidate_correct, window.candidate_labels);
        window.stable = share(stable_correct, window.stable_labels);
        Some(window)
    }

    /// Runs one controller tick after a tick of traffic and applies its decision.
    fn tick(&mut self, requests: u64) -> Outcome {
        self.traffic(requests);
        let decision = canary::decide(
            &self.spec,
            &self.state,
            &self.stats,
            self.quality(),
            self.now,
        );
        self.state = decision.state.clone();
        if let Some(variants) = &decision.variants {
            self.variants = variants.clone();
        }
        let outcome = decision.outcome;
        self.decisions.push(decision);
        outcome
    }

    /// Ticks until the rollout ends or `max_ticks` pass.
    fn run(&mut self, requests: u64, max_ticks: usize) -> Outcome {
        for _ in 0..max_ticks {
            let outcome = self.tick(requests);
            if matches!(outcome, Outcome::Promoted | Outcome::RolledBack) {
                return outcome;
            }
        }
        Outcome::Wait
    }

    fn stored_decisions(&self) -> Vec<&Decision> {
        self.decisions
            .iter()
            .filter(|decision| decision.outcome.action().is_some())
            .collect()
    }
}

fn spec(checks: CanaryChecks) -> CanarySpec {
    CanarySpec {
        steps: vec![10, 50],
        interval_secs: 5,
        min_requests: 20,
        failure_threshold: 2,
        checks,
        sticky: None,
    }
}

fn request_checks() -> CanaryChecks {
    CanaryChecks {
        max_error_rate: Some(0.05),
        max_p99_ms: Some(100.0),
        max_p99_ratio: Some(2.0),
        quality: None,
    }
}

#[test]
fn erroring_candidate_rolled_back() {
    let behaviour = Behaviour {
        candidate_error_rate: 0.5,
        ..GOOD
    };
    let mut sim = Sim::new(spec(request_checks()), behaviour);
    let outcome = sim.run(100, 200);
    assert_eq!(outcome, Outcome::RolledBack);
    assert_eq!(sim.state.status, RolloutStatus::RolledBack);
    assert_eq!(sim.variants.len(), 1);
    assert_eq!(sim.variants[0].version, 1);
    assert_eq!(sim.variants[0].weight, 100);
}

#[test]
fn erroring_candidate_within_bound() {
    let behaviour = Behaviour {
        candidate_error_rate: 0.5,
        ..GOOD
    };
    let mut sim = Sim::new(spec(request_checks()), behaviour);
    sim.run(100, 200);
    let bound = request_bound(&sim.spec, sim.candidate_per_tick_max);
    assert!(
        sim.candidate_answered <= bound,
        "candidate answered {} requests; bound {bound}",
        sim.candidate_answered
    );
}

#[test]
fn bound_holds_at_high_traffic() {
    // 2000 requests a tick: the window overshoots min_requests by up to one tick of traffic.
    let behaviour = Behaviour {
        candidate_error_rate: 1.0,
        ..GOOD
    };
    let mut spec = spec(request_checks());
    spec.failure_threshold = 3;
    let mut sim = Sim::new(spec, behaviour);
    let outcome = sim.run(2000, 50);
    assert_eq!(outcome, Outcome::RolledBack);
    let bound = request_bound(&sim.spec, sim.candidate_per_tick_max);
    assert!(
        sim.candidate_answered <= bound,
        "candidate answered {}; bound {bound}",
        sim.candidate_answered
    );
}

#[test]
fn slow_candidate_rolled_back() {
    let behaviour = Behaviour {
        candidate_latency_us: 40_000,
        ..GOOD
    };
    let checks = CanaryChecks {
        max_error_rate: None,
        max_p99_ms: None,
        max_p99_ratio: Some(2.0),
        quality: None,
    };
    let mut sim = Sim::new(spec(checks), behaviour);
    let outcome = sim.run(300, 200);
    assert_eq!(outcome, Outcome::RolledBack);
    let bound = request_bound(&sim.spec, sim.candidate_per_tick_max);
    assert!(
        sim.candidate_answered <= bound,
        "{} > {bound}",
        sim.candidate_answered
    );
    let last = sim.decisions.last().unwrap();
    assert!(
        last.evidence.p99_ratio.unwrap() > 2.0,
        "{:?}",
        last.evidence
    );
}

#[test]
fn worse_quality_rolled_back() {
    let behaviour = Behaviour {
        candidate_accuracy: 0.5,
        stable_accuracy: 0.95,
        ..GOOD
    };
    let checks = CanaryChecks {
        quality: Some(QualityCheck {
            metric: "accuracy".into(),
            max_drop: 0.1,
            min_labels: 30,
        }),
        ..CanaryChecks::default()
    };
    let mut sim = Sim::new(spec(checks), behaviour);
    let outcome = sim.run(100, 300);
    assert_eq!(outcome, Outcome::RolledBack);
    // Labels arrive with each response here, so the request bound applies with min_labels.
    let mut bounded = sim.spec.clone();
    bounded.min_requests = 30;
    let bound = request_bound(&bounded, sim.candidate_per_tick_max);
    assert!(
        sim.candidate_answered <= bound,
        "{} > {bound}",
        sim.candidate_answered
    );
    let quality = sim
        .decisions
        .last()
        .unwrap()
        .evidence
        .quality
        .clone()
        .unwrap();
    assert!(quality.candidate.unwrap() < quality.stable.unwrap());
}

#[test]
fn good_candidate_promoted() {
    let mut sim = Sim::new(spec(request_checks()), GOOD);
    let outcome = sim.run(100, 200);
    assert_eq!(outcome, Outcome::Promoted);
    assert_eq!(sim.state.status, RolloutStatus::Promoted);
    assert_eq!(sim.variants.len(), 1);
    assert_eq!(sim.variants[0].name, "primary");
    assert_eq!(sim.variants[0].version, 2);
    assert_eq!(sim.variants[0].weight, 100);
}

#[test]
fn promotion_follows_every_step() {
    let mut sim = Sim::new(spec(request_checks()), GOOD);
    sim.run(100, 200);
    let outcomes: Vec<Outcome> = sim.stored_decisions().iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, vec![Outcome::StepPassed, Outcome::Promoted]);
    let first = &sim.stored_decisions()[0];
    assert_eq!(first.variants.as_ref().unwrap()[1].weight, 50);
}

#[test]
fn step_waits_for_interval() {
    let mut sim = Sim::new(spec(request_checks()), GOOD);
    // Four ticks of one second each are below the five-second interval.
    for _ in 0..4 {
        assert_eq!(sim.tick(100), Outcome::Wait);
    }
    assert_eq!(sim.state.step, 0);
}

#[test]
fn step_waits_for_min_requests() {
    let mut spec = spec(request_checks());
    spec.min_requests = 1_000;
    let mut sim = Sim::new(spec, GOOD);
    // About 10 candidate requests a tick at the 10% step.
    for _ in 0..20 {
        sim.tick(100);
    }
    assert_eq!(sim.state.step, 0);
    let checks = &sim.decisions.last().unwrap().evidence.checks;
    assert!(checks.iter().all(|check| !check.judged), "{checks:?}");
}

#[test]
fn paused_rollout_does_not_move() {
    let behaviour = Behaviour {
        candidate_error_rate: 1.0,
        ..GOOD
    };
    let mut sim = Sim::new(spec(request_checks()), behaviour);
    let (paused, variants) = canary::apply_manual(
        &sim.state,
        ManualAction::Pause,
        &sim.stats,
        sim.now,
        "alice",
    )
    .unwrap();
    assert!(variants.is_none());
    sim.state = paused;
    for _ in 0..50 {
        assert_eq!(sim.tick(100), Outcome::Idle);
    }
    assert_eq!(sim.state.status, RolloutStatus::Paused);
    assert_eq!(sim.state.failures, 0);
    assert_eq!(sim.variants[1].weight, 10);
}

#[test]
fn resume_starts_new_window() {
    let mut sim = Sim::new(spec(request_checks()), GOOD);
    sim.tick(100);
    let (paused, _) = canary::apply_manual(
        &sim.state,
        ManualAction::Pause,
        &sim.stats,
        sim.now,
        "alice",
    )
    .unwrap();
    let (resumed, _) =
        canary::apply_manual(&paused, ManualAction::Resume, &sim.stats, sim.now, "alice").unwrap();
    assert_eq!(resumed.status, RolloutStatus::Running);
    assert_eq!(resumed.window_started_at, sim.now);
    assert_eq!(resumed.baseline, sim.stats);
}

#[test]
fn decisions_carry_evidence() {
    let behaviour = Behaviour {
        candidate_error_rate: 0.5,
        ..GOOD
    };
    let mut sim = Sim::new(spec(request_checks()), behaviour);
    sim.run(100, 200);
    let stored = sim.stored_decisions();
    assert_eq!(stored.len(), 2, "one failed check, then the rollback");
    for decision in stored {
        let evidence = &decision.evidence;
        assert_eq!(evidence.rollout_id, sim.state.id);
        assert_eq!(evidence.checks.len(), 3);
        assert!(evidence.candidate.requests >= sim.spec.min_requests);
        assert!(evidence.candidate.error_rate.unwrap() > 0.05);
        assert_eq!(evidence.failure_threshold, 2);
        assert_eq!(evidence.step_percent, 10);
        assert!(evidence.stable.requests > 0);
    }
}

#[test]
fn failed_check_resets_window() {
    let behaviour = Behaviour {
        candidate_error_rate: 0.5,
        ..GOOD
    };
    let mut sim = Sim::new(spec(request_checks()), behaviour);
    loop {
        if sim.tick(100) == Outcome::CheckFailed {
            break;
        }
    }
    assert_eq!(sim.state.failures, 1);
    assert_eq!(sim.state.window_started_at, sim.now);
    assert_eq!(sim.state.baseline, sim.stats);
}

#[test]
fn abort_returns_to_stable() {
    let sim = Sim::new(spec(request_checks()), GOOD);
    let (aborted, variants) =
        canary::apply_manual(&sim.state, ManualAction::Abort, &sim.stats, sim.now, "bob").unwrap();
    assert_eq!(aborted.status, RolloutStatus::Aborted);
    assert_eq!(variants.unwrap(), canary::single_variant("fraud", 1));
}

#[test]
fn manual_promote_skips_steps() {
    let sim = Sim::new(spec(request_checks()), GOOD);
    let (promoted, variants) = canary::apply_manual(
        &sim.state,
        ManualAction::Promote,
        &sim.stats,
        sim.now,
        "bob",
    )
    .unwrap();
    assert_eq!(promoted.status, RolloutStatus::Promoted);
    assert_eq!(variants.unwrap(), canary::single_variant("fraud", 2));
}

#[test]
fn ended_rollout_rejects_actions() {
    let mut sim = Sim::new(spec(request_checks()), GOOD);
    sim.run(100, 200);
    let error = canary::apply_manual(&sim.state, ManualAction::Abort, &sim.stats, sim.now, "bob")
        .unwrap_err();
    assert!(error.contains("promoted"), "{error}");
}

#[test]
fn validate_rejects_decreasing_steps() {
    let mut spec = spec(request_checks());
    spec.steps = vec![50, 10];
    let error = canary::validate(&spec).unwrap_err();
    assert!(error.contains("must increase"), "{error}");
}

#[test]
fn validate_rejects_unknown_metric() {
    let spec = spec(CanaryChecks {
        quality: Some(QualityCheck {
            metric: "precision".into(),
            max_drop: 0.1,
            min_labels: 10,
        }),
        ..CanaryChecks::default()
    });
    assert!(canary::validate(&spec).is_err());
}

#[test]
fn full_step_skips_stable_comparisons() {
    let mut spec = spec(request_checks());
    spec.steps = vec![100];
    let mut sim = Sim::new(spec, GOOD);
    let outcome = sim.run(100, 50);
    assert_eq!(outcome, Outcome::Promoted);
}

/// Stable counters the rollout's baseline holds from traffic served before it started.
fn stable_history(requests: u64) -> VariantStats {
    let mut latency_buckets = vec![0; LATENCY_BOUNDS_US.len() + 1];
    latency_buckets[latency_bucket(GOOD.stable_latency_us)] = requests;
    VariantStats {
        variant: "primary".into(),
        model: "fraud".into(),
        version: 1,
        requests,
        latency_buckets,
        ..VariantStats::default()
    }
}

#[test]
fn stats_reset_restarts_window() {
    // The summed stable counters drop, as when the rows of replicas that stopped long ago
    // are pruned: the window restarts instead of waiting for the sum to climb back.
    let mut sim = Sim::new(spec(request_checks()), GOOD);
    sim.stats = vec![stable_history(100_000)];
    sim.state.baseline = sim.stats.clone();
    sim.tick(100);
    sim.stats[0] = stable_history(0);
    let outcome = sim.tick(100);
    assert_eq!(outcome, Outcome::WindowRestarted);
    assert_eq!(sim.state.baseline, sim.stats);
    assert_eq!(sim.state.failures, 0);
}

#[test]
fn stats_reset_still_promotes() {
    let mut sim = Sim::new(spec(request_checks()), GOOD);
    sim.stats = vec![stable_history(100_000)];
    sim.state.baseline = sim.stats.clone();
    sim.tick(100);
    sim.stats[0] = stable_history(10);
    assert_eq!(sim.run(100, 200), Outcome::Promoted);
}

#[test]
fn candidate_reset_keeps_bound() {
    // The candidate's counters drop to zero after each tick's traffic was counted once: a
    // window measured with a saturating difference would never reach min_requests.
    let behaviour = Behaviour {
        candidate_error_rate: 1.0,
        ..GOOD
    };
    let mut sim = Sim::new(spec(request_checks()), behaviour);
    sim.stats = vec![VariantStats {
        variant: CANDIDATE_VARIANT.into(),
        model: "fraud".into(),
        version: 2,
        requests: 1_000_000,
        errors: 0,
        latency_buckets: vec![0; LATENCY_BOUNDS_US.len() + 1],
        ..VariantStats::default()
    }];
    sim.state.baseline = sim.stats.clone();
    let index = sim.stats.len() - 1;
    sim.stats[index].requests = 0;
    assert_eq!(sim.run(100, 200), Outcome::RolledBack);
    let bound = request_bound(&sim.spec, sim.candidate_per_tick_max);
    assert!(
        sim.candidate_answered <= bound,
        "candidate answered {}; bound {bound}",
        sim.candidate_answered
    );
}

#[test]
fn ratio_check_exceeds_bound_above_half() {
    // At a 90% step the p99 ratio waits for min_requests stable requests, so a slow candidate
    // serves about nine times min_requests per window, above `request_bound`.
    let behaviour = Behaviour {
        candidate_latency_us: 40_000,
        ..GOOD
    };
    let checks = CanaryChecks {
        max_error_rate: None,
        max_p99_ms: None,
        max_p99_ratio: Some(2.0),
        quality: None,
    };
    let mut spec = spec(checks);
    spec.steps = vec![90];
    spec.min_requests = 200;
    let mut sim = Sim::new(spec, behaviour);
    assert_eq!(sim.run(100, 500), Outcome::RolledBack);
    let bound = request_bound(&sim.spec, sim.candidate_per_tick_max);
    assert!(
        sim.candidate_answered > 4 * bound,
        "candidate answered {}; bound {bound}",
        sim.candidate_answered
    );
}
