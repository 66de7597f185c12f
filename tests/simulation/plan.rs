//! The workflows flows are started from, and the plans their handlers
//! follow: what each handler enumerates and which attempts fail, drawn per
//! flow, so that the path a flow must take is known in advance.

use super::*;

/// Handlers and their attempts; every retry waits 5 ms, 10 ms, 20 ms.
pub(crate) const HANDLERS: [(&str, u32); 8] = [
    ("Alpha", 3),
    ("Beta", 2),
    ("Gamma", 4),
    ("Fixer", 2),
    ("Reporter", 2),
    ("Finisher", 3),
    ("Limited", 3),
    ("Poller", 2),
];

/// How many times the polling workflow's `check` phase may be entered.
pub(crate) const POLL_MAX_VISITS: u32 = 3;

/// The limits of the `Limited` handler in the workflow that has them: one
/// call at a time across the installation, and a rate that bursts to five
/// calls and then allows one every 200 ms.
pub(crate) const LIMITED_CONCURRENCY: u32 = 1;
pub(crate) const LIMITED_RATE: &str = "5/s";

pub(crate) fn handler(name: &str) -> Value {
    let attempts = HANDLERS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, attempts)| *attempts)
        .expect("a simulated handler");
    json!({
        "name": name,
        "retry": {"max_attempts": attempts, "initial_delay": "5ms", "max_delay": "20ms"}
    })
}

/// The workflows flows are started from, by name.
/// The workflow the `family` workflow's children run: phases without
/// handlers, so a child needs only an engine.
pub(crate) fn leaf() -> Arc<Workflow> {
    Arc::new(
        parse_definition_value(&json!({
            "workflow": "leaf",
            "phases": {
                "start": {"is_initial": true, "transitions_to": "end"},
                "end": {"is_final": true}
            }
        }))
        .expect("the leaf workflow is valid"),
    )
}

pub(crate) fn workflows() -> &'static [(&'static str, Arc<Workflow>)] {
    static WORKFLOWS: OnceLock<Vec<(&'static str, Arc<Workflow>)>> = OnceLock::new();
    WORKFLOWS.get_or_init(|| {
        let definitions = [
            // A phase without handlers first, two handlers side by side, an
            // error phase and a final phase that both have handlers.
            (
                "linear",
                json!({
                    "workflow": "linear",
                    "phases": {
                        "start": {"is_initial": true, "transitions_to": "fetch"},
                        "fetch": {"transitions_to": "crunch", "on_error_transition_to": "error",
                                  "handlers": [handler("Alpha"), handler("Beta")]},
                        "crunch": {"transitions_to": "done", "on_error_transition_to": "error",
                                   "handlers": [handler("Gamma")]},
                        "error": {"is_final": true, "handlers": [handler("Reporter")]},
                        "done": {"is_final": true, "handlers": [handler("Finisher")]}
                    }
                }),
            ),
            // Handlers in the initial phase, no error phase (a failure ends
            // the flow), then phases without handlers to the end.
            (
                "bare",
                json!({
                    "workflow": "bare",
                    "phases": {
                        "only": {"is_initial": true, "transitions_to": "pass",
                                 "handlers": [handler("Alpha")]},
                        "pass": {"transitions_to": "end"},
                        "end": {"is_final": true}
                    }
                }),
            ),
            // `work` fails into `repair`, which leads back to `work`: a phase
            // visited twice. Handlers succeed on a second visit, so the loop
            // is taken at most once. `repair` was entered by an error, so its
            // own failure ends the flow instead of taking it to `abandon`.
            (
                "loop",
                json!({
                    "workflow": "loop",
                    "phases": {
                        "begin": {"is_initial": true, "transitions_to": "work",
                                  "handlers": [handler("Gamma")]},
                        "work": {"transitions_to": "finish", "on_error_transition_to": "repair",
                                 "handlers": [handler("Alpha"), handler("Beta")]},
                        "repair": {"transitions_to": "work", "on_error_transition_to": "abandon",
                                   "handlers": [handler("Fixer")]},
                        "finish": {"is_final": true, "handlers": [handler("Finisher")]},
                        "abandon": {"is_final": true}
                    }
                }),
            ),
            // Branches: on the flow's data and its outputs together, the
            // default branch otherwise.
            (
                "branch",
                json!({
                    "workflow": "branch",
                    "phases": {
                        "choose": {"is_initial": true, "on_error_transition_to": "error",
                                   "handlers": [handler("Alpha")],
                                   "transitions_to": [
                                       {"when": {"all": [
                                           {"path": "/data/route", "equals": "left"},
                                           {"path": "/outputs/choose/Alpha/0/job", "exists": true}
                                       ]}, "to": "left"},
                                       {"to": "right"}
                                   ]},
                        "left": {"is_final": true, "handlers": [handler("Beta")]},
                        "right": {"is_final": true},
                        "error": {"is_final": true}
                    }
                }),
            ),
            // A phase that waits for a signal between two that work: the
            // flow ends only once signaled (the drain signals what waits).
            (
                "wait",
                json!({
                    "workflow": "wait",
                    "phases": {
                        "start": {"is_initial": true, "transitions_to": "review",
                                  "on_error_transition_to": "error",
                                  "handlers": [handler("Alpha")]},
                        "review": {"wait_for": "go", "transitions_to": "done"},
                        "done": {"is_final": true, "handlers": [handler("Finisher")]},
                        "error": {"is_final": true}
                    }
                }),
            ),
            // The clock: a deadline for the whole flow, a timeout on a phase
            // that works under a shared limit and a rate (its jobs wait for
            // slots and tokens), and one on a phase that waits for a signal.
            // A timeout takes the error transition, so the path is not
            // planned: the checks hold it to the clock instead.
            (
                "timed",
                json!({
                    "workflow": "timed",
                    "timeout": "1s",
                    "phases": {
                        "start": {"is_initial": true, "transitions_to": "review",
                                  "on_error_transition_to": "late", "timeout": "400ms",
                                  "handlers": [{
                                      "name": "Limited",
                                      "retry": {"max_attempts": 3, "initial_delay": "5ms", "max_delay": "20ms"},
                                      "concurrency": LIMITED_CONCURRENCY,
                                      "rate": LIMITED_RATE
                                  }]},
                        "review": {"wait_for": "go", "timeout": "40ms", "transitions_to": "done",
                                   "on_error_transition_to": "late"},
                        "done": {"is_final": true, "handlers": [handler("Finisher")]},
                        "late": {"is_final": true}
                    }
                }),
            ),
            // Polls until ready: `check` loops back to itself by its default
            // branch until its first job says `ready` (from the visit
            // `data.ready_after` on), guarded by `max_visits`; crossing it
            // is an error that leads to `gave-up`.
            (
                "poll",
                json!({
                    "workflow": "poll",
                    "phases": {
                        "check": {"is_initial": true, "max_visits": POLL_MAX_VISITS,
                                  "on_error_transition_to": "gave-up",
                                  "handlers": [handler("Poller")],
                                  "transitions_to": [
                                      {"when": {"path": "/outputs/check/Poller/0/ready", "equals": true},
                                       "to": "done"},
                                      {"to": "check"}
                                  ]},
                        "done": {"is_final": true},
                        "gave-up": {"is_final": true}
                    }
                }),
            ),
            // A phase that starts child flows of `leaf`, one per element of
            // `data.kids` (none to three), and fans in on them.
            (
                "family",
                json!({
                    "workflow": "family",
                    "phases": {
                        "spawn": {"is_initial": true, "transitions_to": "done",
                                  "subflows": {"workflow": "leaf", "for_each": "/data/kids"}},
                        "done": {"is_final": true, "handlers": [handler("Finisher")]}
                    }
                }),
            ),
        ];
        definitions
            .into_iter()
            .map(|(name, definition)| {
                let workflow = parse_definition_value(&definition)
                    .unwrap_or_else(|error| panic!("the {name} workflow is invalid: {error}"));
                (name, Arc::new(workflow))
            })
            .collect()
    })
}

// ----------------------------------------------------------------- plans

/// How failure-prone a run's handlers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// Nothing fails.
    Clean,
    /// Some attempts fail, but every job and enumeration succeeds in the end.
    Flaky,
    /// Flaky, and one handler of each flow always fails.
    Doomed,
    /// Each attempt fails by the roll of a die; the outcome is not planned.
    Chaotic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnumeratePlan {
    Succeed,
    /// The first `n` calls fail, fewer than the handler's attempts.
    FailFirst(u32),
    /// Every attempt fails, and is retried.
    Always,
    /// Fails at once, not worth a retry.
    Permanent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JobPlan {
    /// Attempts up to this one fail.
    pub(crate) fail_until: u32,
    /// Fails with an error that is not worth a retry.
    pub(crate) permanent: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct HandlerPlan {
    pub(crate) enumerate: EnumeratePlan,
    pub(crate) jobs: Vec<JobPlan>,
}

/// What a flow's handlers will do, keyed by `phase/handler`.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) handlers: BTreeMap<String, HandlerPlan>,
    pub(crate) chaotic: bool,
    /// `data.route` is `left` (else `right`), for the workflow that branches.
    pub(crate) route_left: bool,
    /// How many child flows the workflow that has children starts.
    pub(crate) kids: usize,
    /// From which visit of the polling workflow's `check` on its jobs say
    /// `ready` (past its `max_visits`: never).
    pub(crate) ready_after: u64,
}

pub(crate) fn plan_key(phase: &str, handler: &str) -> String {
    format!("{phase}/{handler}")
}

impl Plan {
    /// The plan of a flow nobody drew one for (a child flow): no handlers.
    pub(crate) fn empty() -> Plan {
        Plan {
            handlers: BTreeMap::new(),
            chaotic: false,
            route_left: false,
            kids: 0,
            ready_after: 1,
        }
    }

    pub(crate) fn draw(rng: &mut Rng, workflow: &Workflow, profile: Profile) -> Plan {
        let slots: Vec<(usize, usize)> = workflow
            .phases
            .iter()
            .enumerate()
            .flat_map(|(p, phase)| (0..phase.handlers.len()).map(move |s| (p, s)))
            .collect();
        let doomed = (profile == Profile::Doomed).then(|| slots[rng.below(slots.len())]);
        let flaky = matches!(profile, Profile::Flaky | Profile::Doomed);
        let mut handlers = BTreeMap::new();
        for &(p, s) in &slots {
            let phase = &workflow.phases[p];
            let spec = &phase.handlers[s];
            let attempts = spec.retry.max_attempts;
            let count = match rng.below(100) {
                0..=14 => 0,
                15..=77 => rng.within(1, 3),
                _ => rng.within(4, 7),
            };
            let mut plan = HandlerPlan {
                enumerate: EnumeratePlan::Succeed,
                jobs: (0..count)
                    .map(|_| JobPlan {
                        fail_until: 0,
                        permanent: false,
                    })
                    .collect(),
            };
            if flaky && attempts > 1 {
                if rng.percent(20) {
                    plan.enumerate =
                        EnumeratePlan::FailFirst(rng.within(1, u64::from(attempts) - 1) as u32);
                }
                for job in &mut plan.jobs {
                    if rng.percent(30) {
                        job.fail_until = rng.within(1, u64::from(attempts) - 1) as u32;
                    }
                }
            }
            if doomed == Some((p, s)) {
                match rng.below(4) {
                    0 => plan.enumerate = EnumeratePlan::Always,
                    1 => plan.enumerate = EnumeratePlan::Permanent,
                    _ if plan.jobs.is_empty() => plan.enumerate = EnumeratePlan::Always,
                    _ => {
                        let victim = rng.below(plan.jobs.len());
                        plan.jobs[victim] = if rng.percent(50) {
                            JobPlan {
                                fail_until: attempts,
                                permanent: false,
                            }
                        } else {
                            JobPlan {
                                fail_until: 0,
                                permanent: true,
                            }
                        };
                    }
                }
            }
            handlers.insert(plan_key(phase.name.as_str(), spec.name.as_str()), plan);
        }
        Plan {
            handlers,
            chaotic: profile == Profile::Chaotic,
            route_left: rng.percent(50),
            kids: rng.below(4),
            ready_after: rng.within(1, u64::from(POLL_MAX_VISITS) + 1),
        }
    }

    /// The flow's data: its index, and the plan for the handlers to follow.
    pub(crate) fn data(&self, index: usize) -> Map<String, Value> {
        let handlers: Map<String, Value> = self
            .handlers
            .iter()
            .map(|(key, plan)| {
                let enumerate = match plan.enumerate {
                    EnumeratePlan::Succeed => json!(0),
                    EnumeratePlan::FailFirst(n) => json!(n),
                    EnumeratePlan::Always => json!("always"),
                    EnumeratePlan::Permanent => json!("permanent"),
                };
                let jobs: Vec<Value> = plan
                    .jobs
                    .iter()
                    .map(|job| json!([job.fail_until, job.permanent]))
                    .collect();
                (key.clone(), json!({"enumerate": enumerate, "jobs": jobs}))
            })
            .collect();
        let mut data = Map::new();
        data.insert("index".into(), json!(index));
        data.insert("chaotic".into(), json!(self.chaotic));
        data.insert("plan".into(), Value::Object(handlers));
        data.insert(
            "route".into(),
            json!(if self.route_left { "left" } else { "right" }),
        );
        data.insert("kids".into(), json!(vec![Value::Null; self.kids]));
        data.insert("ready_after".into(), json!(self.ready_after));
        data
    }

    /// What a phase's branches read once it completed: the flow's data,
    /// and an output (`{"job": ...}`) per job of each of its handlers.
    /// `None` when the number of jobs is not planned: an enumeration lists
    /// one more job per call before it, so only an empty plan that
    /// succeeds at once may list none or some, as deliveries fall.
    fn seen_by_branches(&self, phase: &Phase) -> Option<Value> {
        let mut outputs = Map::new();
        for spec in &phase.handlers {
            let plan = &self.handlers[&plan_key(phase.name.as_str(), spec.name.as_str())];
            let jobs = match plan.enumerate {
                EnumeratePlan::FailFirst(calls) => plan.jobs.len() + calls as usize,
                _ if plan.jobs.is_empty() => return None,
                _ => plan.jobs.len(),
            };
            outputs.insert(
                spec.name.to_string(),
                json!(vec![json!({"job": "?"}); jobs]),
            );
        }
        Some(json!({
            "data": {"route": if self.route_left { "left" } else { "right" }},
            "outputs": {phase.name.as_str(): outputs},
        }))
    }

    /// Whether the first visit of `phase` fails. Later visits never do.
    pub(crate) fn fails(&self, phase: &Phase) -> bool {
        phase.handlers.iter().any(|spec| {
            let plan = &self.handlers[&plan_key(phase.name.as_str(), spec.name.as_str())];
            matches!(
                plan.enumerate,
                EnumeratePlan::Always | EnumeratePlan::Permanent
            ) || plan
                .jobs
                .iter()
                .any(|job| job.permanent || job.fail_until >= spec.retry.max_attempts)
        })
    }

    /// The path the flow must take, and how it must end, unless canceled.
    pub(crate) fn expected(&self, workflow: &Workflow) -> Option<Expected> {
        // Time and loops are not planned: the checks hold such flows to
        // the clock and to `max_visits` instead.
        let unplanned = workflow.timeout.is_some()
            || workflow
                .phases
                .iter()
                .any(|phase| phase.timeout.is_some() || phase.max_visits.is_some());
        if self.chaotic || unplanned {
            return None;
        }
        let initial = workflow.initial_phase();
        let mut path = vec![Move {
            from: None,
            to: initial.name.clone(),
            error: false,
        }];
        let mut visits: BTreeMap<PhaseName, u32> = BTreeMap::new();
        loop {
            let last = path.last().expect("a path has a start").clone();
            let phase = workflow
                .phase(last.to.as_str())
                .expect("a phase of the workflow");
            let visit = visits.entry(phase.name.clone()).or_default();
            *visit += 1;
            let next = if *visit == 1 && self.fails(phase) {
                match &phase.on_error_transition_to {
                    Some(target) if !last.error => Move {
                        from: Some(phase.name.clone()),
                        to: target.clone(),
                        error: true,
                    },
                    _ => {
                        return Some(Expected {
                            path,
                            status: FlowStatus::Failed,
                        })
                    }
                }
            } else {
                match &phase.transitions_to {
                    Some(next) if !phase.is_final => Move {
                        from: Some(phase.name.clone()),
                        to: next.choose(&self.seen_by_branches(phase)?).clone(),
                        error: false,
                    },
                    _ => {
                        return Some(Expected {
                            path,
                            status: FlowStatus::Finished,
                        })
                    }
                }
            };
            path.push(next);
            assert!(path.len() < 32, "the plan's model of a flow loops");
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.chaotic {
            f.write_str("chaotic ")?;
        }
        for (n, (key, plan)) in self.handlers.iter().enumerate() {
            if n > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{key}[")?;
            match plan.enumerate {
                EnumeratePlan::Succeed => {}
                EnumeratePlan::FailFirst(calls) => write!(f, "enum fails {calls}x; ")?,
                EnumeratePlan::Always => f.write_str("enum always fails; ")?,
                EnumeratePlan::Permanent => f.write_str("enum fails for good; ")?,
            }
            let jobs: Vec<String> = plan
                .jobs
                .iter()
                .map(|job| match job.permanent {
                    true => "P".to_owned(),
                    false => job.fail_until.to_string(),
                })
                .collect();
            write!(f, "{}]", jobs.join(","))?;
        }
        if self.route_left {
            f.write_str(" route left")?;
        }
        Ok(())
    }
}

/// One entry of a flow's history, as the checks compare them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) from: Option<PhaseName>,
    pub(crate) to: PhaseName,
    pub(crate) error: bool,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{from}")?,
            None => f.write_str("·")?,
        }
        let arrow = if self.error { " -!-> " } else { " -> " };
        write!(f, "{arrow}{}", self.to)
    }
}

pub(crate) fn moves(record: &FlowRecord) -> Vec<Move> {
    record
        .transitions
        .iter()
        .map(|t| Move {
            from: t.from.clone(),
            to: t.to.clone(),
            error: t.error.is_some(),
        })
        .collect()
}

pub(crate) fn show_path(path: &[Move]) -> String {
    path.iter()
        .map(Move::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Debug)]
pub(crate) struct Expected {
    pub(crate) path: Vec<Move>,
    pub(crate) status: FlowStatus,
}
