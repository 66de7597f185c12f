//! The scheduler: one step at a time, with faults, and the checks after
//! every step.

use super::*;

/// How a run goes: drawn from its seed.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    pub(crate) max_flows: usize,
    pub(crate) chaos_steps: u64,
    pub(crate) profile: Profile,
    /// Engines serving nudges side by side.
    pub(crate) engines: usize,
    /// With two engines, percent of nudges that reach both at once (as a
    /// sweep and a completion can), both stepped: they race to move the
    /// flow.
    pub(crate) race: u32,
    /// Percent of actors that move one store operation per step.
    pub(crate) stepped: u32,
    /// Percent of other executions left in flight while their handler runs.
    pub(crate) linger: u32,
    /// Percent of deliveries duplicated first.
    pub(crate) duplicate: u32,
    /// Percent of executions whose acknowledgement is lost.
    pub(crate) redeliver: u32,
    /// Percent of deliveries the worker crashes on before running.
    pub(crate) crash_before: u32,
    /// Weights of the other actions.
    pub(crate) worker_crash: u32,
    pub(crate) engine_crash: u32,
    pub(crate) process_crash: u32,
    pub(crate) command: u32,
    /// Whether commands include cancels (flows that end canceled do not
    /// show how they would have ended).
    pub(crate) cancels: bool,
}

impl RunConfig {
    pub(crate) fn draw(rng: &mut Rng) -> Self {
        let profile = match rng.below(100) {
            0..=24 => Profile::Clean,
            25..=59 => Profile::Flaky,
            60..=84 => Profile::Doomed,
            _ => Profile::Chaotic,
        };
        Self {
            max_flows: rng.within(1, 3) as usize,
            chaos_steps: rng.within(20, 80),
            profile,
            engines: rng.within(1, 2) as usize,
            race: rng.within(0, 40) as u32,
            stepped: rng.within(0, 60) as u32,
            linger: rng.within(0, 50) as u32,
            duplicate: rng.within(0, 15) as u32,
            redeliver: rng.within(0, 12) as u32,
            crash_before: rng.within(0, 6) as u32,
            worker_crash: rng.within(0, 3) as u32,
            engine_crash: rng.within(0, 3) as u32,
            process_crash: rng.within(0, 2) as u32,
            command: rng.within(0, 8) as u32,
            cancels: rng.percent(50),
        }
    }
}

/// What the runs injected and saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) seeds: u64,
    pub(crate) steps: u64,
    pub(crate) flows: u64,
    pub(crate) tasks_delivered: u64,
    pub(crate) nudges_delivered: u64,
    pub(crate) actor_steps: u64,
    pub(crate) stepped_actors: u64,
    pub(crate) two_engine_runs: u64,
    pub(crate) races: u64,
    pub(crate) duplicates: u64,
    pub(crate) duplicate_nudges: u64,
    pub(crate) redeliveries: u64,
    pub(crate) crashes_before_run: u64,
    pub(crate) worker_crashes: u64,
    pub(crate) executions_lost: u64,
    pub(crate) engine_crashes: u64,
    pub(crate) advances_lost: u64,
    pub(crate) process_crashes: u64,
    pub(crate) clock_advances: u64,
    pub(crate) pauses: u64,
    pub(crate) resumes: u64,
    pub(crate) cancels: u64,
    pub(crate) redrives: u64,
    pub(crate) children: u64,
    pub(crate) signals_kept: u64,
    pub(crate) signals_consumed: u64,
    pub(crate) signal_duplicates: u64,
    pub(crate) keyed_starts: u64,
    pub(crate) keyed_repeats: u64,
    pub(crate) keys_taken: u64,
    pub(crate) rejected: u64,
    pub(crate) admissions: u64,
    pub(crate) finished: u64,
    pub(crate) failed: u64,
    pub(crate) canceled: u64,
    pub(crate) slot_waits: u64,
    pub(crate) token_waits: u64,
    pub(crate) deadlines_passed: u64,
    pub(crate) phase_timeouts: u64,
    pub(crate) loops: u64,
    pub(crate) max_visits_crossed: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        let pairs = [
            (&mut self.seeds, other.seeds),
            (&mut self.steps, other.steps),
            (&mut self.flows, other.flows),
            (&mut self.tasks_delivered, other.tasks_delivered),
            (&mut self.nudges_delivered, other.nudges_delivered),
            (&mut self.actor_steps, other.actor_steps),
            (&mut self.stepped_actors, other.stepped_actors),
            (&mut self.two_engine_runs, other.two_engine_runs),
            (&mut self.races, other.races),
            (&mut self.duplicates, other.duplicates),
            (&mut self.duplicate_nudges, other.duplicate_nudges),
            (&mut self.redeliveries, other.redeliveries),
            (&mut self.crashes_before_run, other.crashes_before_run),
            (&mut self.worker_crashes, other.worker_crashes),
            (&mut self.executions_lost, other.executions_lost),
            (&mut self.engine_crashes, other.engine_crashes),
            (&mut self.advances_lost, other.advances_lost),
            (&mut self.process_crashes, other.process_crashes),
            (&mut self.clock_advances, other.clock_advances),
            (&mut self.pauses, other.pauses),
            (&mut self.resumes, other.resumes),
            (&mut self.cancels, other.cancels),
            (&mut self.redrives, other.redrives),
            (&mut self.keyed_starts, other.keyed_starts),
            (&mut self.signals_kept, other.signals_kept),
            (&mut self.children, other.children),
            (&mut self.signals_consumed, other.signals_consumed),
            (&mut self.signal_duplicates, other.signal_duplicates),
            (&mut self.keyed_repeats, other.keyed_repeats),
            (&mut self.keys_taken, other.keys_taken),
            (&mut self.rejected, other.rejected),
            (&mut self.admissions, other.admissions),
            (&mut self.finished, other.finished),
            (&mut self.failed, other.failed),
            (&mut self.canceled, other.canceled),
            (&mut self.slot_waits, other.slot_waits),
            (&mut self.token_waits, other.token_waits),
            (&mut self.deadlines_passed, other.deadlines_passed),
            (&mut self.phase_timeouts, other.phase_timeouts),
            (&mut self.loops, other.loops),
            (&mut self.max_visits_crossed, other.max_visits_crossed),
        ];
        for (mine, theirs) in pairs {
            *mine += theirs;
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} seeds ({} with two engines, {} nudges raced by both), {} steps, {} flows ({} \
             finished, {} failed, {} canceled)",
            self.seeds,
            self.two_engine_runs,
            self.races,
            self.steps,
            self.flows,
            self.finished,
            self.failed,
            self.canceled
        )?;
        writeln!(
            f,
            "delivered {} tasks ({} admitted to run) and {} nudges; {} actors stepped one store \
             operation at a time, {} actor steps",
            self.tasks_delivered,
            self.admissions,
            self.nudges_delivered,
            self.stepped_actors,
            self.actor_steps
        )?;
        writeln!(
            f,
            "faults: {} duplicated tasks, {} duplicated nudges, {} redeliveries after a lost \
             acknowledgement, {} worker crashes before a run, {} worker crashes ({} executions \
             in progress), {} engine crashes ({} advances in progress), {} process crashes",
            self.duplicates,
            self.duplicate_nudges,
            self.redeliveries,
            self.crashes_before_run,
            self.worker_crashes,
            self.executions_lost,
            self.engine_crashes,
            self.advances_lost,
            self.process_crashes
        )?;
        writeln!(
            f,
            "the clock: {} deadlines passed, {} phases timed out; limits: {} waits for a slot, \
             {} for a rate token; loops: {} phases entered again, {} loops stopped \
             by max_visits",
            self.deadlines_passed,
            self.phase_timeouts,
            self.slot_waits,
            self.token_waits,
            self.loops,
            self.max_visits_crossed
        )?;
        write!(
            f,
            "{} clock advances; commands: {} pauses, {} resumes, {} cancels, {} retries \
             acknowledged, {} rejected for the wrong state; {} keyed starts, {} repeated \
             (the same flow back), {} refused (the key was taken); signals: {} consumed at \
             once, {} kept, {} duplicates; {} child flows",
            self.clock_advances,
            self.pauses,
            self.resumes,
            self.cancels,
            self.redrives,
            self.rejected,
            self.keyed_starts,
            self.keyed_repeats,
            self.keys_taken,
            self.signals_consumed,
            self.signals_kept,
            self.signal_duplicates,
            self.children
        )
    }
}

/// The records of a flow as last checked: history only grows.
#[derive(Clone, Default)]
pub(crate) struct Seen {
    pub(crate) moves: Vec<Move>,
    pub(crate) states: Vec<PhaseState>,
    pub(crate) status: Option<FlowStatus>,
}

/// A flow as the scheduler knows it.
pub(crate) struct SimFlow {
    pub(crate) id: FlowId,
    pub(crate) plan: Plan,
    pub(crate) expected: Option<Expected>,
    /// The step at which the client acknowledged a pause not yet resumed.
    pub(crate) paused_at: Option<u64>,
    /// The step at which the client acknowledged a cancel.
    pub(crate) canceled_at: Option<u64>,
    /// How long the history was when the flow was paused or canceled.
    pub(crate) frozen: Option<usize>,
    pub(crate) seen: Seen,
    /// Retries acknowledged.
    pub(crate) redrives: u32,
    /// The ids of the signals sent to the flow.
    pub(crate) signals_sent: BTreeSet<String>,
    /// A child flow an engine started (its parent's cancel may end it).
    pub(crate) child: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Deliver,
    Nudge,
    Step,
    CrashWorker,
    CrashEngine,
    CrashProcess,
    Clock,
    Command,
    Start,
    Signal,
}

/// A failed run: when, and which invariant broke.
pub(crate) struct Failure {
    pub(crate) step: u64,
    pub(crate) message: String,
}

/// Steps allowed to deliver what is left once faults stop.
pub(crate) const DRAIN_LIMIT: u64 = 20_000;

pub(crate) type Checked = Result<(), String>;

/// A flow started with a key: the key, the flow's index, its workflow and
/// data.
pub(crate) type KeyedStart = (String, usize, Arc<Workflow>, Map<String, Value>);

pub(crate) struct Sim {
    pub(crate) rng: Rng,
    pub(crate) config: RunConfig,
    pub(crate) rt: tokio::runtime::Runtime,
    /// The store itself, for the checks; the parts see it through a
    /// `SimStore`.
    pub(crate) store: EmbeddedStore,
    pub(crate) network: Arc<Mutex<Network>>,
    pub(crate) backend: Backend,
    pub(crate) registry: HandlerRegistry,
    pub(crate) engines: Vec<Engine>,
    pub(crate) worker: Worker,
    pub(crate) client: Client,
    pub(crate) journal: Arc<Mutex<Journal>>,
    pub(crate) flows: Vec<SimFlow>,
    /// Flows started with a key: the key, the flow's index, and what it
    /// was started with, for starts that repeat it.
    pub(crate) keyed: Vec<KeyedStart>,
    pub(crate) actors: Vec<Actor>,
    pub(crate) next_actor: u64,
    pub(crate) step: u64,
    pub(crate) counts: Counts,
    pub(crate) trace: Vec<String>,
    pub(crate) verbose: bool,
}

impl Sim {
    pub(crate) fn new(seed: u64, verbose: bool) -> Sim {
        POLLING.with(|current| current.set(None));
        let mut rng = Rng::new(seed);
        let config = RunConfig::draw(&mut rng);
        // No timer: nothing in a step may wait on wall-clock time.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let store = EmbeddedStore::in_memory();
        let journal = Arc::new(Mutex::new(Journal::new(seed)));
        let network = Arc::new(Mutex::new(Network::default()));
        let (events, _) = broadcast::channel(16);
        // The simulated store wraps the flow operations and queries; the
        // registries and retention are the real store's, untouched.
        let sim_store = Arc::new(SimStore {
            inner: store.clone(),
            journal: journal.clone(),
            network: network.clone(),
        });
        let real = Arc::new(store.clone());
        let backend = Backend {
            flows: sim_store.clone(),
            queries: sim_store,
            workflows: real.clone(),
            workers: real.clone(),
            retention: real.clone(),
            feed: real.clone(),
            schedules: real,
            broker: Arc::new(SimBroker {
                network: network.clone(),
                journal: journal.clone(),
                events,
            }),
            clock: Arc::new(SimClock {
                network: network.clone(),
            }),
        };
        let mut registry = HandlerRegistry::new();
        for (name, _) in HANDLERS {
            let handler = SimHandler {
                journal: journal.clone(),
                network: network.clone(),
            };
            registry.register(
                name,
                Version::new(1, 0, 0),
                handler,
                HandlerOptions::default(),
            );
        }
        let engines = (0..config.engines)
            .map(|_| Engine::new(backend.clone(), Arc::new(registry.clone())))
            .collect();
        // A lease short enough that the slot of a crashed call frees
        // within a run.
        let worker = WorkerBuilder::new(backend.clone(), registry.clone())
            .slot_lease(SIM_SLOT_LEASE)
            .build();
        rt.block_on(distribot::store::WorkflowRegistry::put_workflow(
            &store,
            leaf(),
            Timestamp(0),
        ))
        .expect("the leaf workflow registers");
        let client = Client::new(backend.clone());
        let counts = Counts {
            seeds: 1,
            two_engine_runs: u64::from(config.engines == 2),
            ..Counts::default()
        };
        Sim {
            rng,
            config,
            rt,
            store,
            network,
            backend,
            registry,
            engines,
            worker,
            client,
            journal,
            flows: Vec::new(),
            keyed: Vec::new(),
            actors: Vec::new(),
            next_actor: 0,
            step: 0,
            counts,
            trace: Vec::new(),
            verbose,
        }
    }

    pub(crate) fn run(&mut self) -> Result<(), Failure> {
        let config = format!("{:?}", self.config);
        self.note(format!("config {config}"));
        let outcome = self
            .chaos()
            .and_then(|()| self.drain())
            .and_then(|()| self.finale());
        outcome.map_err(|message| Failure {
            step: self.step,
            message,
        })
    }

    // ------------------------------------------------------------ phases

    pub(crate) fn chaos(&mut self) -> Checked {
        self.act(Action::Start, true)?;
        while self.step < self.config.chaos_steps {
            if self.is_quiet() && self.flows.len() == self.config.max_flows {
                self.note("every flow ended; the faults stop early".to_owned());
                break;
            }
            let action = self.choose();
            self.act(action, true)?;
        }
        Ok(())
    }

    /// No more faults or commands: resume what is paused, then finish every
    /// actor and deliver everything until nothing moves. No sweep helps,
    /// with one exception: every flow must end on the nudges and tasks the
    /// parts sent. The exception is an engine that crashed between claiming
    /// the dispatch of an enumeration and sending it: its claim holds until
    /// the lease runs out, and then the sweep every engine runs every few
    /// seconds sends it. After an engine crash, the drain lets the lease
    /// run out and sweeps once.
    pub(crate) fn drain(&mut self) -> Checked {
        self.note("drain: no more faults, crashes or commands".to_owned());
        for index in 0..self.flows.len() {
            if self.record(index).status == FlowStatus::Paused {
                self.begin();
                self.command_on(index, Command::Resume)?;
                self.after_step()?;
            }
        }
        let deadline = self.step + DRAIN_LIMIT;
        let mut swept = self.counts.engine_crashes == 0;
        loop {
            while let Some(action) = self.next_in_drain() {
                if self.step >= deadline {
                    return Err(format!(
                        "the run did not settle within {DRAIN_LIMIT} steps of draining"
                    ));
                }
                self.act(action, false)?;
            }
            // What waits for a signal gets one, with a new id.
            let waiting: Vec<usize> = (0..self.flows.len())
                .filter(|&index| rules::awaited_signal(&self.record(index)).is_some())
                .collect();
            if !waiting.is_empty() {
                for index in waiting {
                    self.begin();
                    let id = format!("f{index}-drain-{}", self.step);
                    self.signal_flow(index, id)?;
                    self.after_step()?;
                }
                continue;
            }
            let unfinished = at_once(self.store.unfinished_flows())
                .map_err(|error| format!("listing unfinished flows failed: {error}"))?;
            if swept || unfinished.is_empty() {
                return Ok(());
            }
            swept = true;
            self.begin();
            self.sweep_after_lease(unfinished);
            self.after_step()?;
        }
    }

    /// The dispatch lease runs out, and an engine sweeps every unfinished
    /// flow.
    pub(crate) fn sweep_after_lease(&mut self, unfinished: Vec<FlowId>) {
        {
            let mut network = lock(&self.network);
            network.clock += SIM_DISPATCH_LEASE_MS;
        }
        let engine = self.engines[0].clone();
        self.rt.block_on(async move {
            for flow in unfinished {
                engine.nudge(flow).await;
            }
            quiesce().await;
        });
        self.note_ops(
            "the dispatch lease runs out; engine 0 sweeps every unfinished flow".to_owned(),
        );
    }

    pub(crate) fn next_in_drain(&mut self) -> Option<Action> {
        let (ready, delayed, _) = self.pending();
        let nudges = self.deliverable_nudges().len();
        let asleep = !lock(&self.network).sleepers.is_empty();
        // Now and then the clock moves for actors that sleep; the others
        // take their steps meanwhile.
        let wake_sleepers = asleep && self.rng.percent(30);
        if !self.actors.is_empty() && !wake_sleepers {
            Some(Action::Step)
        } else if asleep {
            Some(Action::Clock)
        } else if ready + nudges > 0 {
            if self.rng.below(ready + nudges) < ready {
                Some(Action::Deliver)
            } else {
                Some(Action::Nudge)
            }
        } else if delayed > 0 {
            Some(Action::Clock)
        } else {
            None
        }
    }

    /// After the drain: every flow ended as it must, nothing is left over.
    pub(crate) fn finale(&mut self) -> Checked {
        {
            let network = lock(&self.network);
            if !network.tasks.is_empty() || !network.nudges.is_empty() {
                return Err(format!(
                    "the network still holds {} tasks and {} nudges",
                    network.tasks.len(),
                    network.nudges.len()
                ));
            }
        }
        let stuck: Vec<usize> = (0..self.flows.len())
            .filter(|&index| !self.record(index).status.is_ended())
            .collect();
        if !stuck.is_empty() {
            return Err(self.explain_stuck(&stuck));
        }
        for index in 0..self.flows.len() {
            let record = self.record(index);
            let flow = &self.flows[index];
            let path = moves(&record);
            if flow.canceled_at.is_some() {
                // Checked after every step: it is canceled.
            } else if let Some(expected) = &flow.expected {
                if record.status != expected.status || path != expected.path {
                    return Err(format!(
                        "f{index} ended {} by {}, but its plan ({}) demands {} by {}",
                        record.status,
                        show_path(&path),
                        flow.plan,
                        expected.status,
                        show_path(&expected.path)
                    ));
                }
            } else if flow.child {
                // A child ends as it may: canceled with its parent, say.
            } else if !matches!(record.status, FlowStatus::Finished | FlowStatus::Failed) {
                return Err(format!(
                    "f{index} ended {} without being canceled",
                    record.status
                ));
            }
            self.check_outputs(index, &record)?;
            for (seq, transition) in record.transitions.iter().enumerate() {
                let again = record.phases[..seq]
                    .iter()
                    .any(|run| run.phase == transition.to);
                if again && transition.error.is_none() && transition.retried_by.is_none() {
                    self.counts.loops += 1;
                }
                if transition
                    .error
                    .as_ref()
                    .is_some_and(|error| error.message.contains("(its max_visits)"))
                {
                    self.counts.max_visits_crossed += 1;
                }
            }
            for error in record.phases.iter().filter_map(|run| run.error.as_ref()) {
                if error.message == rules::DEADLINE_PASSED {
                    self.counts.deadlines_passed += 1;
                } else if error.message.starts_with(PHASE_TIMED_OUT) {
                    self.counts.phase_timeouts += 1;
                }
            }
            match record.status {
                FlowStatus::Finished => self.counts.finished += 1,
                FlowStatus::Failed => self.counts.failed += 1,
                _ => self.counts.canceled += 1,
            }
        }
        Ok(())
    }

    /// Says what stuck flows wait for, and what would free them: a sweep
    /// (nudging every unfinished flow, as the embedded runtime does every
    /// few seconds), or only a restart (`Engine::recover` on a new engine).
    pub(crate) fn explain_stuck(&mut self, stuck: &[usize]) -> String {
        let mut message = String::new();
        for &index in stuck {
            let record = self.record(index);
            let _ = write!(
                message,
                "f{index} is stuck: {}; history {}; ",
                summary(index, &record),
                show_path(&moves(&record))
            );
        }
        for (remedy, restart) in [("a sweep", false), ("a restart", true)] {
            let engine = if restart {
                Engine::new(self.backend.clone(), Arc::new(self.registry.clone()))
            } else {
                self.engines[0].clone()
            };
            let unfinished = at_once(self.store.unfinished_flows()).unwrap_or_default();
            let _ = self.rt.block_on(async move {
                let outcome = match restart {
                    true => engine.recover().await,
                    false => {
                        for flow in unfinished {
                            engine.nudge(flow).await;
                        }
                        Ok(())
                    }
                };
                quiesce().await;
                outcome
            });
            let limit = self.step + DRAIN_LIMIT;
            while let Some(action) = self.next_in_drain() {
                self.begin();
                if self.step > limit || self.perform(action, false).is_err() {
                    break;
                }
            }
            if stuck
                .iter()
                .all(|&index| self.record(index).status.is_ended())
            {
                let _ = write!(message, "{remedy} frees it");
                return message;
            }
        }
        message.push_str("neither a sweep nor a restart frees it");
        message
    }

    // ----------------------------------------------------------- actions

    /// Tasks due, tasks delayed, nudges.
    /// Tasks ready, what waits for the clock (delayed tasks, timers,
    /// sleeping actors), and nudges.
    pub(crate) fn pending(&self) -> (usize, usize, usize) {
        let network = lock(&self.network);
        let ready = network
            .tasks
            .iter()
            .filter(|queued| network.is_ready(queued))
            .count();
        let waiting = network.tasks.len() - ready + network.timers.len() + network.sleepers.len();
        (ready, waiting, network.nudges.len())
    }

    /// Nudges an engine can take now, with the engine: an engine advances
    /// a flow once at a time (the real one folds a second nudge into one
    /// more pass).
    pub(crate) fn deliverable_nudges(&self) -> Vec<(usize, usize)> {
        let network = lock(&self.network);
        let mut deliverable = Vec::new();
        for (index, flow) in network.nudges.iter().enumerate() {
            for engine in 0..self.engines.len() {
                if !self.advancing(flow, engine) {
                    deliverable.push((index, engine));
                }
            }
        }
        deliverable
    }

    pub(crate) fn is_quiet(&self) -> bool {
        self.pending() == (0, 0, 0)
            && self.actors.is_empty()
            && self
                .flows
                .iter()
                .all(|flow| flow.seen.status.is_some_and(FlowStatus::is_ended))
    }

    pub(crate) fn choose(&mut self) -> Action {
        let (ready, delayed, _) = self.pending();
        let nudges = self.deliverable_nudges().len();
        let c = &self.config;
        let executing = self
            .actors
            .iter()
            .any(|actor| matches!(actor.role, Role::Execute(_)));
        let mut options: Vec<(Action, u32)> = vec![
            (Action::CrashEngine, c.engine_crash),
            (Action::CrashProcess, c.process_crash),
            (Action::Command, c.command),
        ];
        if ready > 0 {
            options.push((Action::Deliver, 35));
        }
        if nudges > 0 {
            options.push((Action::Nudge, 25));
        }
        if !self.actors.is_empty() {
            options.push((Action::Step, 35));
        }
        if executing {
            options.push((Action::CrashWorker, c.worker_crash));
        }
        if delayed > 0 {
            options.push((Action::Clock, if ready + nudges == 0 { 30 } else { 5 }));
        }
        if self.flows.len() < c.max_flows {
            options.push((Action::Start, 4));
        }
        if !self.flows.is_empty() {
            options.push((Action::Signal, 2));
        }
        options.retain(|(_, weight)| *weight > 0);
        if options.is_empty() {
            return Action::Command;
        }
        let weights: Vec<u32> = options.iter().map(|(_, weight)| *weight).collect();
        options[self.rng.weighted(&weights)].0
    }

    pub(crate) fn begin(&mut self) {
        self.step += 1;
        self.counts.steps += 1;
        let mut journal = lock(&self.journal);
        journal.step = self.step;
        journal.ops.clear();
    }

    pub(crate) fn act(&mut self, action: Action, faults: bool) -> Checked {
        self.begin();
        self.perform(action, faults)?;
        self.after_step()
    }

    pub(crate) fn perform(&mut self, action: Action, faults: bool) -> Checked {
        match action {
            Action::Deliver => {
                self.deliver(faults);
                Ok(())
            }
            Action::Nudge => {
                self.deliver_nudge(faults);
                Ok(())
            }
            Action::Step => {
                self.step_actor(faults);
                Ok(())
            }
            Action::CrashWorker => {
                self.crash_worker();
                Ok(())
            }
            Action::CrashEngine => {
                let engine = self.rng.below(self.engines.len());
                self.crash_engine(Some(engine))
            }
            Action::CrashProcess => self.crash_engine(None),
            Action::Clock => {
                self.advance_clock();
                Ok(())
            }
            Action::Command => self.command(),
            Action::Start => self.start_flow(),
            Action::Signal => {
                let index = self.rng.below(self.flows.len());
                let id = format!("f{index}-s{}", self.rng.below(3));
                self.signal_flow(index, id)
            }
        }
    }

    /// Sends the signal `go` with `id` (ids repeat, so some are duplicates)
    /// and checks the answer against the flow: a refusal only for a flow
    /// that ended, a duplicate only for an id sent before, a consumed
    /// signal now in a visit.
    pub(crate) fn signal_flow(&mut self, index: usize, id: String) -> Checked {
        let client = self.client.clone();
        let flow = self.flows[index].id.clone();
        let payload = json!({"from": id});
        let signal_id = id.clone();
        let outcome = self.rt.block_on(async move {
            let sent = client.signal(&flow, "go", payload, Some(signal_id)).await;
            quiesce().await;
            sent
        });
        // A refused signal leaves no trace: its id may come again.
        let sent_before = self.flows[index].signals_sent.contains(&id);
        if outcome.is_ok() {
            self.flows[index].signals_sent.insert(id.clone());
        }
        let record = self.record(index);
        let line = format!("signal f{index} go ({id})");
        match outcome {
            Err(ClientError::SignalRejected(_)) if record.status.is_ended() => {
                self.note(format!("{line}: refused, the flow has ended"));
                Ok(())
            }
            Ok((_, SignalOutcome::Duplicate)) if sent_before => {
                self.counts.signal_duplicates += 1;
                self.note(format!("{line}: a duplicate, nothing changed"));
                Ok(())
            }
            Ok((_, SignalOutcome::Kept)) if !sent_before => {
                self.counts.signals_kept += 1;
                self.note(format!("{line}: kept"));
                Ok(())
            }
            Ok((_, SignalOutcome::Consumed))
                if !sent_before
                    && record
                        .phases
                        .iter()
                        .any(|run| run.signal.as_ref().is_some_and(|s| s.id == id)) =>
            {
                self.counts.signals_consumed += 1;
                self.note(format!("{line}: consumed"));
                Ok(())
            }
            other => Err(format!(
                "{line}: the client answered {other:?} (sent before: {sent_before}; flow {})",
                record.status
            )),
        }
    }

    pub(crate) fn new_actor(&mut self, role: Role, stepped: bool) -> Actor {
        let future: Pin<Box<dyn Future<Output = Result<(), RuntimeError>>>> = match &role {
            Role::Execute(task) => {
                let worker = self.worker.clone();
                let task = task.clone();
                Box::pin(async move { worker.execute(&task).await })
            }
            Role::Advance { flow, engine } => {
                let engine = self.engines[*engine].clone();
                let flow = flow.clone();
                Box::pin(async move { engine.advance(&flow).await })
            }
        };
        self.next_actor += 1;
        self.counts.stepped_actors += u64::from(stepped);
        Actor {
            id: self.next_actor,
            role,
            stepped,
            future,
        }
    }

    /// Starts an actor with its first step; it runs on in later steps if it
    /// is stepped or left in flight, or to its end now.
    pub(crate) fn start_actor(&mut self, role: Role, faults: bool, line: String) {
        let stepped = faults && self.rng.percent(self.config.stepped);
        let mut actor = self.new_actor(role, stepped);
        match poll_actor(&self.rt, &mut actor) {
            Poll::Ready(outcome) => self.finished(actor.role, outcome, faults, line),
            Poll::Pending if stepped => {
                let line = format!("{line}: steps one store operation at a time");
                self.actors.push(actor);
                self.note_ops(line);
            }
            Poll::Pending if faults && self.rng.percent(self.config.linger) => {
                let line = format!("{line}: the handler runs; the result waits");
                self.actors.push(actor);
                self.note_ops(line);
            }
            Poll::Pending => match run_out(&self.rt, &mut actor) {
                Some(outcome) => self.finished(actor.role, outcome, faults, line),
                None => {
                    let line = format!("{line}: waits for the clock");
                    self.actors.push(actor);
                    self.note_ops(line);
                }
            },
        }
    }

    pub(crate) fn deliver(&mut self, faults: bool) {
        let task = {
            let mut network = lock(&self.network);
            let ready = network.ready();
            let pick = ready[self.rng.below(ready.len())];
            network.tasks.remove(pick).task
        };
        self.counts.tasks_delivered += 1;
        let what = self.describe(&task);
        if faults && self.rng.percent(self.config.crash_before) {
            self.counts.crashes_before_run += 1;
            self.requeue(task);
            self.note(format!(
                "deliver {what}: the worker crashes before running it; it goes back"
            ));
            return;
        }
        let mut line = format!("deliver {what}");
        if faults && self.rng.percent(self.config.duplicate) {
            self.counts.duplicates += 1;
            self.requeue(task.clone());
            line.push_str(", duplicated");
        }
        self.start_actor(Role::Execute(task), faults, line);
    }

    pub(crate) fn deliver_nudge(&mut self, faults: bool) {
        let deliverable = self.deliverable_nudges();
        let (pick, engine) = deliverable[self.rng.below(deliverable.len())];
        let flow = lock(&self.network).nudges.remove(pick);
        self.counts.nudges_delivered += 1;
        let mut line = format!("nudge f{} to engine {engine}", self.index_of(&flow));
        if faults && self.rng.percent(self.config.duplicate) {
            self.counts.duplicate_nudges += 1;
            lock(&self.network).nudges.push(flow.clone());
            line.push_str(", duplicated");
        }
        let other = 1 - engine.min(1);
        let race = faults
            && self.engines.len() == 2
            && self.rng.percent(self.config.race)
            && !self.advancing(&flow, other);
        if !race {
            self.start_actor(Role::Advance { flow, engine }, faults, line);
            return;
        }
        self.counts.races += 1;
        for engine in [engine, other] {
            let mut actor = self.new_actor(
                Role::Advance {
                    flow: flow.clone(),
                    engine,
                },
                true,
            );
            match poll_actor(&self.rt, &mut actor) {
                Poll::Ready(outcome) => {
                    let line = format!("{line} (engine {engine} at once)");
                    self.finished(actor.role, outcome, faults, line);
                }
                Poll::Pending => self.actors.push(actor),
            }
        }
        self.note_ops(format!(
            "{line}, and to engine {other} at once: both step one store operation at a time"
        ));
    }

    /// Whether an engine is advancing a flow now.
    pub(crate) fn advancing(&self, flow: &FlowId, engine: usize) -> bool {
        self.actors.iter().any(|actor| {
            matches!(&actor.role, Role::Advance { flow: f, engine: e } if f == flow && *e == engine)
        })
    }

    pub(crate) fn step_actor(&mut self, faults: bool) {
        let pick = self.rng.below(self.actors.len());
        self.counts.actor_steps += 1;
        let line = format!("step {}", self.describe_role(&self.actors[pick].role));
        match poll_actor(&self.rt, &mut self.actors[pick]) {
            Poll::Ready(outcome) => {
                let actor = self.actors.remove(pick);
                self.finished(actor.role, outcome, faults, line);
            }
            Poll::Pending => self.note_ops(line),
        }
    }

    /// An actor is done: its delivery is acknowledged (or, as a fault, the
    /// acknowledgement is lost), or handed back when it failed.
    pub(crate) fn finished(
        &mut self,
        role: Role,
        outcome: Result<(), RuntimeError>,
        faults: bool,
        mut line: String,
    ) {
        let flow = match &role {
            Role::Execute(task) => task.flow().clone(),
            Role::Advance { flow, .. } => flow.clone(),
        };
        match (role, outcome) {
            (Role::Execute(task), Ok(())) => {
                if faults && self.rng.percent(self.config.redeliver) {
                    self.counts.redeliveries += 1;
                    self.requeue(task);
                    line.push_str(", done, but its acknowledgement is lost");
                } else {
                    line.push_str(", done");
                }
            }
            (Role::Execute(task), Err(error)) => {
                self.requeue(task);
                let _ = write!(line, ", failed ({error}); handed back");
            }
            (Role::Advance { .. }, Ok(())) => line.push_str(", done"),
            (Role::Advance { flow, .. }, Err(error)) => {
                lock(&self.network).nudges.push(flow);
                let _ = write!(line, ", failed ({error}); handed back");
            }
        }
        let index = self.index_of(&flow);
        let state = summary(index, &self.record(index));
        self.note_ops(format!("{line} => {state}"));
    }

    /// Executions in progress are lost: what recorded nothing goes back
    /// unacknowledged; what recorded its result finishes its follow-up
    /// first, and comes again too, since its acknowledgement is lost.
    pub(crate) fn crash_worker(&mut self) {
        self.counts.worker_crashes += 1;
        let (executions, others): (Vec<Actor>, Vec<Actor>) = std::mem::take(&mut self.actors)
            .into_iter()
            .partition(|actor| matches!(actor.role, Role::Execute(_)));
        self.actors = others;
        self.counts.executions_lost += executions.len() as u64;
        let recorded = lock(&self.journal).recorded.clone();
        let mut words = Vec::new();
        for mut actor in executions {
            let Role::Execute(task) = actor.role.clone() else {
                unreachable!("partitioned by role");
            };
            let what = self.describe(&task);
            if recorded.contains(&actor.id) {
                actor.stepped = false;
                let outcome = run_out(&self.rt, &mut actor);
                words.push(format!("{what} (recorded; finished: {outcome:?})"));
            } else {
                words.push(what);
            }
            self.requeue(task);
        }
        self.note_ops(format!(
            "the worker crashes; back to the queues unacknowledged: {}",
            words.join("; ")
        ));
    }

    /// A new engine over the same store and network, as after a restart:
    /// its `advance`s in progress are lost (their nudges come again), and
    /// it looks at every unfinished flow, as the embedded runtime's sweep
    /// does. A process crash (`None`) loses everything that lived in
    /// memory, and a new engine runs `Engine::recover`, as on start.
    ///
    /// Only a process crash runs `Engine::recover`: the embedded store's
    /// `recover` has restart semantics (every queue died, every engine is
    /// new), so it requeues every unfinished job and forgets parked tasks.
    /// Run while another engine remembers what it dispatched, a paused
    /// flow's parked enumerations would be lost for that engine's
    /// redispatch window. No deployment does that: an embedded process has
    /// one engine, and engines side by side run on Redis, whose `recover`
    /// keeps what a paused flow parked.
    pub(crate) fn crash_engine(&mut self, engine: Option<usize>) -> Checked {
        let line = match engine {
            Some(crashed) => {
                self.counts.engine_crashes += 1;
                let (lost, kept): (Vec<Actor>, Vec<Actor>) = std::mem::take(&mut self.actors)
                    .into_iter()
                    .partition(|actor| {
                        matches!(actor.role, Role::Advance { engine, .. } if engine == crashed)
                    });
                self.actors = kept;
                self.counts.advances_lost += lost.len() as u64;
                let mut words = Vec::new();
                for actor in lost {
                    if let Role::Advance { flow, .. } = actor.role {
                        words.push(format!("f{}", self.index_of(&flow)));
                        lock(&self.network).nudges.push(flow);
                    }
                }
                self.engines[crashed] =
                    Engine::new(self.backend.clone(), Arc::new(self.registry.clone()));
                format!(
                    "engine {crashed} crashes (advancing: {}); a new one looks at every \
                     unfinished flow",
                    words.join(", ")
                )
            }
            None => {
                self.counts.process_crashes += 1;
                let lost = self.actors.len();
                self.actors.clear();
                let mut network = lock(&self.network);
                let line = format!(
                    "the process crashes: {} tasks, {} nudges and {lost} actors are lost; \
                     a new engine recovers",
                    network.tasks.len(),
                    network.nudges.len()
                );
                network.tasks.clear();
                network.nudges.clear();
                network.timers.clear();
                network.sleepers.clear();
                drop(network);
                for engine in &mut self.engines {
                    *engine = Engine::new(self.backend.clone(), Arc::new(self.registry.clone()));
                }
                line
            }
        };
        // Flows are visited in the store's order; a run is a function of
        // its seed only if that is the order they were started in.
        let unfinished = at_once(self.store.unfinished_flows())
            .map_err(|error| format!("listing unfinished flows failed: {error}"))?;
        let in_start_order: Vec<FlowId> = self
            .flows
            .iter()
            .map(|flow| flow.id.clone())
            .filter(|id| unfinished.contains(id))
            .collect();
        assert_eq!(
            unfinished, in_start_order,
            "the store lists flows out of start order, so runs would not replay"
        );
        let restarted = self.engines[engine.unwrap_or(0)].clone();
        let recovered = self.rt.block_on(async move {
            let outcome = match engine {
                Some(_) => {
                    for flow in unfinished {
                        restarted.nudge(flow).await;
                    }
                    Ok(())
                }
                None => restarted.recover().await,
            };
            quiesce().await;
            outcome
        });
        self.note_ops(line);
        recovered.map_err(|error| format!("recovery failed: {error}"))
    }

    pub(crate) fn advance_clock(&mut self) {
        self.counts.clock_advances += 1;
        let jump = self.rng.within(1, 25);
        let jump_to_due = self.rng.percent(60);
        let mut network = lock(&self.network);
        let before = network.clock;
        let target = match network.next_due() {
            Some(due) if jump_to_due => due,
            _ => before + jump,
        };
        network.clock = target.max(before + 1);
        // Sleepers still waiting say so again when next polled.
        network.sleepers.clear();
        let due = network.due_timers();
        let line = format!(
            "the clock moves {before} -> {} ms; {} timers fire",
            network.clock,
            due.len()
        );
        drop(network);
        if !due.is_empty() {
            self.rt.block_on(async move {
                for work in due {
                    tokio::spawn(work);
                }
                quiesce().await;
            });
        }
        self.note_ops(line);
    }

    /// A command at a random moment, favouring flows at a phase boundary.
    pub(crate) fn command(&mut self) -> Checked {
        if self.flows.is_empty() {
            self.note("nothing to command".to_owned());
            return Ok(());
        }
        let records: Vec<FlowRecord> = (0..self.flows.len()).map(|i| self.record(i)).collect();
        // Children are steered through their parents, whose plans count
        // on them.
        let steerable: Vec<usize> = (0..records.len())
            .filter(|&i| !self.flows[i].child)
            .collect();
        let near: Vec<usize> = steerable
            .iter()
            .copied()
            .filter(|&i| at_boundary(&records[i]))
            .collect();
        let index = if !near.is_empty() && self.rng.percent(60) {
            near[self.rng.below(near.len())]
        } else {
            steerable[self.rng.below(steerable.len())]
        };
        // Flows that went wrong are retried now and then, from where they
        // failed or from scratch, at most twice each; others are sometimes
        // asked too, and must refuse.
        let redrivable = rules::redrive_target(&records[index]).is_ok();
        let retry = if redrivable && self.flows[index].redrives < 2 {
            self.rng.percent(50)
        } else {
            self.rng.percent(3)
        };
        if retry {
            let from_scratch = self.rng.percent(30);
            return self.retry_on(index, from_scratch);
        }
        let cancel = u32::from(self.config.cancels);
        let weights = match records[index].status {
            FlowStatus::Running => [60, 20, 20 * cancel],
            FlowStatus::Paused => [15, 65, 20 * cancel],
            _ => [1, 1, cancel],
        };
        let command =
            [Command::Pause, Command::Resume, Command::Cancel][self.rng.weighted(&weights)];
        self.command_on(index, command)
    }

    pub(crate) fn command_on(&mut self, index: usize, command: Command) -> Checked {
        let before = self.record(index).status;
        let expected = rules::apply_command(before, command);
        let id = self.flows[index].id.clone();
        let client = self.client.clone();
        let outcome = self.rt.block_on(async move {
            let outcome = match command {
                Command::Pause => client.pause(&id).await,
                Command::Resume => client.resume(&id).await,
                Command::Cancel => client.cancel(&id).await,
            };
            quiesce().await;
            outcome
        });
        let line = format!("{command} f{index} ({before})");
        match (outcome, expected) {
            (Ok(status), Ok(wanted)) if status == wanted => {
                let length = self.record(index).transitions.len();
                let step = self.step;
                let flow = &mut self.flows[index];
                match status {
                    FlowStatus::Paused => {
                        self.counts.pauses += 1;
                        flow.paused_at = Some(step);
                        flow.frozen = Some(length);
                    }
                    FlowStatus::Running => {
                        self.counts.resumes += 1;
                        flow.paused_at = None;
                        flow.frozen = None;
                    }
                    _ => {
                        self.counts.cancels += 1;
                        flow.paused_at = None;
                        flow.canceled_at = Some(step);
                        flow.frozen = Some(length);
                    }
                }
                self.note(format!("{line}: acknowledged, now {status}"));
                Ok(())
            }
            (Err(ClientError::Rejected(rejected)), Err(wanted)) if rejected == wanted => {
                self.counts.rejected += 1;
                self.note(format!("{line}: rejected, as it should be"));
                Ok(())
            }
            (outcome, wanted) => Err(format!(
                "{line}: the client answered {outcome:?}, but the rules say {wanted:?}"
            )),
        }
    }

    /// Retries a flow through the client, and checks the answer against the
    /// rules. A retried flow no longer follows its plan (its jobs may fail
    /// again, or not), so from then on it is checked structurally. A
    /// duplicated retry must be refused: the flow runs again.
    pub(crate) fn retry_on(&mut self, index: usize, from_scratch: bool) -> Checked {
        let before = self.record(index);
        let expected = rules::redrive_target(&before);
        let id = self.flows[index].id.clone();
        let client = self.client.clone();
        let duplicate = self.rng.percent(30);
        let (outcome, again) = self.rt.block_on(async move {
            let outcome = client.retry(&id, from_scratch).await;
            let again = if duplicate {
                Some(client.retry(&id, from_scratch).await)
            } else {
                None
            };
            quiesce().await;
            (outcome, again)
        });
        let line = format!(
            "retry f{index} ({}, from scratch: {from_scratch})",
            before.status
        );
        match (outcome, expected) {
            (Ok(cursor), Ok(failed)) => {
                let phase = &before.phases[failed as usize].phase;
                if cursor.phase != *phase || cursor.seq as usize != before.phases.len() {
                    return Err(format!(
                        "{line}: went to {}#{}, not a new visit of {phase}",
                        cursor.phase, cursor.seq
                    ));
                }
                if let Some(again) = again {
                    if !matches!(again, Err(ClientError::RedriveRejected(_))) {
                        return Err(format!("{line}: the duplicated retry answered {again:?}"));
                    }
                }
                self.counts.redrives += 1;
                let flow = &mut self.flows[index];
                flow.redrives += 1;
                flow.expected = None;
                self.note(format!(
                    "{line}: acknowledged, now in {}#{}",
                    cursor.phase, cursor.seq
                ));
                Ok(())
            }
            (Err(ClientError::RedriveRejected(rejected)), Err(wanted)) if rejected == wanted => {
                self.counts.rejected += 1;
                self.note(format!("{line}: rejected, as it should be"));
                Ok(())
            }
            (outcome, wanted) => Err(format!(
                "{line}: the client answered {outcome:?}, but the rules say {wanted:?}"
            )),
        }
    }

    pub(crate) fn start_flow(&mut self) -> Checked {
        if !self.keyed.is_empty() && self.rng.below(4) == 0 {
            return self.repeat_keyed_start();
        }
        let index = self.flows.len();
        let all = workflows();
        let (shape, workflow) = all[self.rng.below(all.len())].clone();
        let plan = Plan::draw(&mut self.rng, &workflow, self.config.profile);
        let expected = plan.expected(&workflow);
        let data = plan.data(index);
        let key = (self.rng.below(3) == 0).then(|| format!("k{index}"));
        if let Some(key) = &key {
            self.keyed
                .push((key.clone(), index, workflow.clone(), data.clone()));
            self.counts.keyed_starts += 1;
        }
        let client = self.client.clone();
        let options = StartOptions {
            key,
            ..StartOptions::default()
        };
        let started = self
            .rt
            .block_on(async move {
                let started = client.start_with(workflow, data, options).await;
                quiesce().await;
                started
            })
            .map_err(|error| format!("starting a flow failed: {error}"))?;
        if !started.created {
            return Err(format!(
                "start f{index} found a kept flow {} for a key never used",
                started.id
            ));
        }
        let id = started.id;
        self.counts.flows += 1;
        let line = match &expected {
            Some(expected) => format!(
                "start f{index}: {shape} {plan}; must end {} by {}",
                expected.status,
                show_path(&expected.path)
            ),
            None => format!("start f{index}: {shape} {plan}"),
        };
        self.flows.push(SimFlow {
            id,
            plan,
            expected,
            paused_at: None,
            canceled_at: None,
            frozen: None,
            redrives: 0,
            signals_sent: BTreeSet::new(),
            child: false,
            seen: Seen::default(),
        });
        self.note(line);
        Ok(())
    }

    /// Starts again with a key already used: with the same workflow and
    /// data it must return that flow and start nothing; with other data it
    /// must be refused. Either way one flow per key.
    fn repeat_keyed_start(&mut self) -> Checked {
        let (key, index, workflow, mut data) = self.keyed[self.rng.below(self.keyed.len())].clone();
        let same = self.rng.below(2) == 0;
        if !same {
            data.insert("other".into(), Value::Bool(true));
        }
        let client = self.client.clone();
        let options = StartOptions {
            key: Some(key.clone()),
            ..StartOptions::default()
        };
        let outcome = self.rt.block_on(async move {
            let started = client.start_with(workflow, data, options).await;
            quiesce().await;
            started
        });
        let line = format!(
            "start again with f{index}'s key {key} ({} data)",
            if same { "the same" } else { "other" }
        );
        match (same, outcome) {
            (true, Ok(started)) if !started.created && started.id == self.flows[index].id => {
                self.counts.keyed_repeats += 1;
                self.note(format!("{line}: f{index} back, nothing started"));
                Ok(())
            }
            (false, Err(ClientError::KeyTaken { flow, .. })) if flow == self.flows[index].id => {
                self.counts.keys_taken += 1;
                self.note(format!("{line}: refused, the key is f{index}'s"));
                Ok(())
            }
            (_, outcome) => Err(format!("{line}: the client answered {outcome:?}")),
        }
    }

    // ------------------------------------------------------------ checks

    /// Child flows the engines started become flows of the run, in the
    /// order they were made; their outcome is checked structurally.
    fn take_on_children(&mut self) -> Checked {
        let children = std::mem::take(&mut lock(&self.journal).children);
        for (id, index) in children {
            if index != self.flows.len() {
                return Err(format!(
                    "child {id} took index {index}, but the run has {} flows",
                    self.flows.len()
                ));
            }
            self.counts.children += 1;
            self.flows.push(SimFlow {
                id,
                plan: Plan::empty(),
                expected: None,
                paused_at: None,
                canceled_at: None,
                frozen: None,
                redrives: 0,
                signals_sent: BTreeSet::new(),
                child: true,
                seen: Seen::default(),
            });
        }
        Ok(())
    }

    /// Every child flow is its parent's, once: no element of a visit has
    /// two, and a visit that recorded its children names each at its
    /// element.
    pub(crate) fn check_children(&self) -> Checked {
        let mut elements: BTreeMap<(FlowId, u32, u32), FlowId> = BTreeMap::new();
        for index in 0..self.flows.len() {
            let record = self.record(index);
            let Some(parent) = &record.parent else {
                continue;
            };
            let element = (parent.flow.clone(), parent.seq, parent.index);
            if let Some(other) = elements.insert(element.clone(), record.id.clone()) {
                return Err(format!(
                    "flows {other} and {} are both the child of element {} of {}#{}",
                    record.id, parent.index, parent.flow, parent.seq
                ));
            }
            let parent_index = self.index_of(&parent.flow);
            let visit = self.record(parent_index).phases[parent.seq as usize].clone();
            if !visit.children.is_empty()
                && visit.children.get(parent.index as usize).map(|c| &c.flow) != Some(&record.id)
            {
                return Err(format!(
                    "f{index} is the child of element {} of f{parent_index}#{}, which names {:?}",
                    parent.index,
                    parent.seq,
                    visit.children.get(parent.index as usize).map(|c| &c.flow)
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn after_step(&mut self) -> Checked {
        self.take_on_children()?;
        let (starts, violations, changed) = {
            let mut journal = lock(&self.journal);
            (
                std::mem::take(&mut journal.starts),
                std::mem::take(&mut journal.violations),
                std::mem::take(&mut journal.changed),
            )
        };
        if let Some(violation) = violations.into_iter().next() {
            return Err(violation);
        }
        self.counts.admissions += starts.len() as u64;
        for start in &starts {
            let flow = &self.flows[start.flow];
            if let Some(at) = flow.canceled_at {
                return Err(format!(
                    "f{} {} was admitted at step {}, after its cancel was acknowledged at step {at}",
                    start.flow, start.what, start.step
                ));
            }
            if let Some(at) = flow.paused_at {
                return Err(format!(
                    "f{} {} was admitted at step {} while its flow was paused (acknowledged at \
                     step {at})",
                    start.flow, start.what, start.step
                ));
            }
        }
        let journal = self.journal.clone();
        let journal = lock(&journal);
        one_enumeration_per_visit(&journal)?;
        // A shared limit holds: no more calls hold its slots than it allows.
        // A crashed call's slot stays taken until its lease ends, and counts
        // no more: it runs nothing. A lease that ran out (its holder stalled
        // past it: a store operation delayed, renewals not run) counts no
        // more either: that is what a lease means.
        let now = lock(&self.network).clock;
        let live: Vec<&String> = journal
            .slots
            .iter()
            .filter(|(_, (actor, _, until))| {
                *until > now
                    && actor.is_none_or(|id| self.actors.iter().any(|actor| actor.id == id))
            })
            .map(|(holder, _)| holder)
            .collect();
        if let Some(limit) = journal.slots.values().map(|(_, limit, _)| *limit).min() {
            if live.len() > limit as usize {
                return Err(format!(
                    "{} calls hold slots of a limit of {limit} at once: {live:?}",
                    live.len()
                ));
            }
        }
        for index in changed {
            self.check_flow(index, &journal.succeeded)?;
        }
        drop(journal);
        self.check_children()
    }

    pub(crate) fn check_flow(
        &mut self,
        index: usize,
        succeeded: &BTreeSet<(usize, u32, u16, u32)>,
    ) -> Checked {
        let record = self.record(index);
        let flow = &self.flows[index];
        let fail = |what: String| -> Checked {
            Err(format!(
                "f{index}: {what} (now {}; history {})",
                summary(index, &record),
                show_path(&moves(&record))
            ))
        };
        let workflow = &record.workflow;

        // Time runs out no sooner than it must: a deadline fails a visit at
        // or after the flow's deadline, a timeout at or after the visit's
        // start and the phase's timeout.
        for run in &record.phases {
            let Some(error) = &run.error else { continue };
            let Some(failed_at) = run.finished_at else {
                continue;
            };
            if error.message == rules::DEADLINE_PASSED {
                match record.deadline {
                    Some(deadline) if failed_at >= deadline => {}
                    deadline => {
                        return fail(format!(
                            "{}#{} failed on its deadline at {} ms, but the deadline is {:?}",
                            run.phase,
                            run.seq,
                            failed_at.millis(),
                            deadline.map(Timestamp::millis)
                        ))
                    }
                }
            }
            if error.message.starts_with(PHASE_TIMED_OUT) {
                let timeout = workflow
                    .phase(run.phase.as_str())
                    .and_then(|phase| phase.timeout);
                let early = timeout.is_none_or(|timeout| failed_at < run.started_at.plus(timeout));
                if early {
                    return fail(format!(
                        "{}#{} timed out at {} ms; it started at {} ms, its timeout is {timeout:?}",
                        run.phase,
                        run.seq,
                        failed_at.millis(),
                        run.started_at.millis()
                    ));
                }
            }
        }

        // A signal is used once: by one visit, and then no longer kept;
        // and only signals that were sent are there at all.
        let used: Vec<&str> = record
            .phases
            .iter()
            .filter_map(|run| run.signal.as_ref().map(|s| s.id.as_str()))
            .collect();
        let distinct: BTreeSet<&str> = used.iter().copied().collect();
        if distinct.len() != used.len() {
            return fail(format!("a signal completed two visits: {used:?}"));
        }
        for pending in &record.signals.pending {
            if distinct.contains(pending.id.as_str()) {
                return fail(format!("signal {} is used and still kept", pending.id));
            }
        }
        if let Some(stray) = used
            .iter()
            .copied()
            .chain(record.signals.pending.iter().map(|s| s.id.as_str()))
            .find(|id| !flow.signals_sent.contains(*id))
        {
            return fail(format!("signal {stray} was never sent"));
        }
        if let Some(run) = record.phases.iter().find(|run| {
            run.signal.is_some()
                && workflow
                    .phase(run.phase.as_str())
                    .is_none_or(|phase| phase.wait_for.is_none())
        }) {
            return fail(format!(
                "{}#{} took a signal without waiting for one",
                run.phase, run.seq
            ));
        }

        // Each phase entry is recorded once, with its visit.
        if record.transitions.len() != record.phases.len() {
            return fail(format!(
                "{} transitions but {} phase visits",
                record.transitions.len(),
                record.phases.len()
            ));
        }
        for (seq, run) in record.phases.iter().enumerate() {
            if run.seq as usize != seq || run.phase != record.transitions[seq].to {
                return fail(format!("visit {seq} is {}#{}", run.phase, run.seq));
            }
        }
        let first = &record.transitions[0];
        if first.from.is_some()
            || first.error.is_some()
            || first.to != workflow.initial_phase().name
        {
            return fail("the history does not begin with · -> the initial phase".into());
        }

        // Each transition is one the definition allows, from a settled visit.
        for seq in 1..record.transitions.len() {
            let transition = &record.transitions[seq];
            let left = &record.phases[seq - 1];
            let phase = workflow.phase(left.phase.as_str()).expect("a phase");
            if transition.from.as_ref() != Some(&left.phase) {
                return fail(format!("transition {seq} does not leave visit {}", seq - 1));
            }
            let allowed = match &transition.error {
                // A redrive: from the settled last visit of an ended flow,
                // back to the phase of a visit that failed.
                None if transition.retried_by.is_some() => {
                    left.state.is_settled() && failed_visit_before(&record, seq).is_some()
                }
                None => {
                    left.state == PhaseState::Completed
                        && !phase.is_final
                        && phase
                            .transitions_to
                            .as_ref()
                            .is_some_and(|next| next.leads_to(transition.to.as_str()))
                }
                // A loop that would enter a phase past its `max_visits`
                // leaves a visit that completed, by its error transition.
                Some(error) if left.state == PhaseState::Completed => {
                    error.handler.is_none()
                        && error.message.contains("(its max_visits)")
                        && record.transitions[seq - 1].error.is_none()
                        && phase.on_error_transition_to.as_ref() == Some(&transition.to)
                        && workflow.phases.iter().any(|target| {
                            target.max_visits.is_some_and(|most| {
                                record.phases[..seq]
                                    .iter()
                                    .filter(|run| run.phase == target.name)
                                    .count()
                                    >= most as usize
                            })
                        })
                }
                Some(error) => {
                    left.state == PhaseState::Failed
                        && record.transitions[seq - 1].error.is_none()
                        && phase.on_error_transition_to.as_ref() == Some(&transition.to)
                        && error.phase == left.phase
                        && left.error.as_ref() == Some(error)
                        && match &error.handler {
                            Some(h) => phase.handlers.iter().any(|spec| spec.name == *h),
                            // Time ran out, which the checks above hold to the clock.
                            None => is_clock_error(error),
                        }
                }
            };
            // No loop enters a phase past its `max_visits` (a redrive,
            // which someone asked for, may).
            let entered = workflow.phase(transition.to.as_str()).expect("a phase");
            if let Some(most) = entered.max_visits {
                let before = record.phases[..seq]
                    .iter()
                    .filter(|run| run.phase == entered.name)
                    .count();
                if transition.retried_by.is_none() && before >= most as usize {
                    return fail(format!(
                        "transition {seq} ({}) enters {} a {}th time, past its max_visits {most}",
                        moves(&record)[seq],
                        entered.name,
                        before + 1
                    ));
                }
            }
            if !allowed {
                return fail(format!(
                    "transition {seq} ({}) is not allowed from a {:?} visit",
                    moves(&record)[seq],
                    left.state
                ));
            }
        }

        // Counts per visit and handler.
        for run in &record.phases {
            let phase = workflow.phase(run.phase.as_str()).expect("a phase");
            if run.handlers.len() != phase.handlers.len() {
                return fail(format!("visit {} has the wrong handlers", run.seq));
            }
            // A phase without handlers completes as it starts, unless it
            // waits for a signal: then it completes only with one.
            let waits = phase.wait_for.is_some();
            let spawns = phase.subflows.is_some();
            if phase.handlers.is_empty() && !waits && !spawns && run.state != PhaseState::Completed
            {
                return fail(format!(
                    "visit {} has no handlers but is {:?}",
                    run.seq, run.state
                ));
            }
            if waits && (run.state == PhaseState::Completed) != run.signal.is_some() {
                return fail(format!(
                    "visit {} waits for a signal and is {:?} with {:?}",
                    run.seq, run.state, run.signal
                ));
            }
            if run.state == PhaseState::Failed && run.error.is_none() {
                return fail(format!("visit {} failed without an error", run.seq));
            }
            for (slot, handler) in run.handlers.iter().enumerate() {
                if handler.done > handler.total {
                    return fail(format!(
                        "visit {} {}: done {} > total {}",
                        run.seq, handler.handler, handler.done, handler.total
                    ));
                }
                if !handler.enumerated && (handler.total > 0 || handler.done > 0) {
                    return fail(format!(
                        "visit {} {} counts jobs it never enumerated",
                        run.seq, handler.handler
                    ));
                }
                if run.state == PhaseState::Completed {
                    if !handler.enumerated || handler.done != handler.total {
                        return fail(format!(
                            "visit {} completed with {} at {}/{} (enumerated: {})",
                            run.seq,
                            handler.handler,
                            handler.done,
                            handler.total,
                            handler.enumerated
                        ));
                    }
                    // A redrive keeps the jobs that completed in the visit it
                    // retried, which may have kept them from an earlier one.
                    let mut visits = vec![run.seq];
                    while let Some(from) = redriven_from(&record, *visits.last().unwrap_or(&0)) {
                        if visits.contains(&from) {
                            break;
                        }
                        visits.push(from);
                    }
                    let missing = (0..handler.total as u32).find(|&job| {
                        !visits
                            .iter()
                            .any(|&seq| succeeded.contains(&(index, seq, slot as u16, job)))
                    });
                    if let Some(job) = missing {
                        return fail(format!(
                            "visit {} completed, but job {}.{slot}.{job} never succeeded",
                            run.seq, run.seq
                        ));
                    }
                }
            }
        }

        // How the flow stands, against how it ended and the commands.
        let last = record.current();
        let phase = workflow.phase(last.phase.as_str()).expect("a phase");
        let entered_by_error = record.transitions[last.seq as usize].error.is_some();
        let consistent = match record.status {
            FlowStatus::Finished => {
                last.state == PhaseState::Completed
                    && (phase.is_final || phase.transitions_to.is_none())
            }
            FlowStatus::Failed => {
                last.state == PhaseState::Failed
                    && (phase.on_error_transition_to.is_none() || entered_by_error)
            }
            _ => true,
        };
        if !consistent {
            return fail(format!(
                "it is {} at a {:?} visit",
                record.status, last.state
            ));
        }
        if record.status.is_ended() != record.ended_at.is_some() {
            return fail("its end time does not match its status".into());
        }
        // A child is steered through its parent, not by the client's
        // commands this run keeps track of.
        if !flow.child && (record.status == FlowStatus::Canceled) != flow.canceled_at.is_some() {
            return fail(format!(
                "it is {} but the client acknowledged {} cancel",
                record.status,
                if flow.canceled_at.is_some() {
                    "a"
                } else {
                    "no"
                }
            ));
        }
        if !flow.child && (record.status == FlowStatus::Paused) != flow.paused_at.is_some() {
            return fail(format!(
                "it is {} but the client acknowledged {} pause",
                record.status,
                if flow.paused_at.is_some() { "a" } else { "no" }
            ));
        }
        if let Some(length) = flow.frozen {
            if record.transitions.len() != length {
                return fail(format!(
                    "it moved while {} (history {length} long at the command)",
                    record.status
                ));
            }
        }

        // History only grows: earlier entries and settled visits stay.
        let now = moves(&record);
        let seen = &flow.seen;
        if now.len() < seen.moves.len() || now[..seen.moves.len()] != seen.moves[..] {
            return fail(format!(
                "its history changed from {}",
                show_path(&seen.moves)
            ));
        }
        for (seq, state) in seen.states.iter().enumerate() {
            if *state != PhaseState::Running && record.phases[seq].state != *state {
                return fail(format!(
                    "visit {seq} went from {state:?} to {:?}",
                    record.phases[seq].state
                ));
            }
        }
        if let Some(before) = seen.status.filter(|status| status.is_ended()) {
            let redriven = now.len() > seen.moves.len()
                && record.transitions[seen.moves.len()].retried_by.is_some();
            if record.status != before && !redriven {
                return fail(format!("it ended {before}, then became {}", record.status));
            }
        }

        // The path follows the plan.
        if let Some(expected) = &flow.expected {
            let on_path = now.len() <= expected.path.len() && expected.path[..now.len()] == now[..];
            let ended_wrong = matches!(record.status, FlowStatus::Finished | FlowStatus::Failed)
                && (now.len() != expected.path.len() || record.status != expected.status);
            if !on_path || ended_wrong {
                return fail(format!(
                    "the plan ({}) demands {} by {}",
                    flow.plan,
                    expected.status,
                    show_path(&expected.path)
                ));
            }
        }

        self.flows[index].seen = Seen {
            moves: now,
            states: record.phases.iter().map(|run| run.state).collect(),
            status: Some(record.status),
        };
        Ok(())
    }

    /// One output per job done, in the latest visit of each phase.
    pub(crate) fn check_outputs(&self, index: usize, record: &FlowRecord) -> Checked {
        let outputs = at_once(self.store.outputs(&record.id))
            .map_err(|error| format!("reading f{index}'s outputs failed: {error}"))?;
        for (phase, by_handler) in &outputs {
            let Some(run) = record.phases.iter().rev().find(|run| run.phase == *phase) else {
                return Err(format!("f{index} has outputs of {phase}, never visited"));
            };
            for (slot, handler) in run.handlers.iter().enumerate() {
                let mut got: Vec<String> = by_handler
                    .get(&handler.handler)
                    .map(|values| {
                        values
                            .iter()
                            .map(|value| value["job"].as_str().unwrap_or("?").to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                got.sort();
                let distinct: BTreeSet<&String> = got.iter().collect();
                // A job done in a visit a redrive carried over (perhaps a
                // redrive of a redrive) keeps the id it was done under.
                let mut prefixes = vec![format!("{}.{slot}.", run.seq)];
                let mut visit = run.seq;
                while let Some(from) = redriven_from(record, visit) {
                    prefixes.push(format!("{from}.{slot}."));
                    visit = from;
                }
                let of_visit = got
                    .iter()
                    .all(|job| prefixes.iter().any(|prefix| job.starts_with(prefix)));
                if got.len() as u64 != handler.done || distinct.len() != got.len() || !of_visit {
                    return Err(format!(
                        "f{index} {phase}#{} {}: {} done but outputs {got:?}",
                        run.seq, handler.handler, handler.done
                    ));
                }
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------- helpers

    pub(crate) fn record(&self, index: usize) -> FlowRecord {
        at_once(self.store.flow(&self.flows[index].id))
            .expect("the in-memory store answers")
            .expect("a simulated flow is never removed")
    }

    pub(crate) fn index_of(&self, id: &FlowId) -> usize {
        lock(&self.journal).index(id)
    }

    pub(crate) fn requeue(&self, task: Task) {
        let mut network = lock(&self.network);
        let due = network.clock;
        network.tasks.push(Queued { due, task });
    }

    pub(crate) fn describe(&self, task: &Task) -> String {
        format!("f{} {}", self.index_of(task.flow()), task_words(task))
    }

    pub(crate) fn describe_role(&self, role: &Role) -> String {
        match role {
            Role::Execute(task) => self.describe(task),
            Role::Advance { flow, engine } => {
                format!("engine {engine} advancing f{}", self.index_of(flow))
            }
        }
    }

    /// Notes a line, with what the store did during the step.
    pub(crate) fn note_ops(&mut self, mut text: String) {
        let ops = std::mem::take(&mut lock(&self.journal).ops);
        if !ops.is_empty() {
            let _ = write!(text, " [{}]", ops.join("; "));
        }
        self.note(text);
    }

    pub(crate) fn note(&mut self, text: String) {
        let clock = lock(&self.network).clock;
        let line = format!("{:>5} t={clock:<5} {text}", self.step);
        if self.verbose {
            eprintln!("{line}");
        }
        self.trace.push(line);
    }
}

/// Whether a flow is at a phase boundary: one job from completing its
/// visit, or its visit settled and not yet left.
pub(crate) fn at_boundary(record: &FlowRecord) -> bool {
    if record.status.is_ended() {
        return false;
    }
    let run = record.current();
    if run.state != PhaseState::Running {
        return true;
    }
    let outstanding: u64 = run
        .handlers
        .iter()
        .map(|h| h.total.saturating_sub(h.done))
        .sum();
    run.handlers.iter().all(|h| h.enumerated) && outstanding == 1
}

/// A flow in one line: `f0 running fetch#1 Running [Alpha 2/3, Beta -]`.
pub(crate) fn summary(index: usize, record: &FlowRecord) -> String {
    let run = record.current();
    let handlers: Vec<String> = run
        .handlers
        .iter()
        .map(|h| match h.enumerated {
            true => format!("{} {}/{}", h.handler, h.done, h.total),
            false => format!("{} -", h.handler),
        })
        .collect();
    format!(
        "f{index} {} {}#{} {:?} [{}]",
        record.status,
        run.phase,
        run.seq,
        run.state,
        handlers.join(", ")
    )
}

/// A visit uses exactly one enumeration per handler: every job of it that
/// ran was listed by the one enumerate call the store recorded, however
/// many calls there were and whatever else they listed.
fn one_enumeration_per_visit(journal: &Journal) -> Checked {
    for ((flow, seq, slot), calls) in &journal.job_calls {
        let recorded = journal.recorded_calls.get(&(*flow, *seq, *slot));
        let only_recorded = recorded.is_some_and(|recorded| calls.iter().all(|c| c == recorded));
        if calls.len() > 1 || !only_recorded {
            return Err(format!(
                "f{flow} visit {seq} slot {slot} ran jobs of enumerate calls {calls:?}; the visit \
                 recorded call {recorded:?}"
            ));
        }
    }
    Ok(())
}

/// The visit a redrive at transition `seq` went back to: the latest earlier
/// visit of the same phase that went wrong (it failed, or a loop past
/// `max_visits` left it by its error transition).
fn failed_visit_before(record: &FlowRecord, seq: usize) -> Option<u32> {
    let phase = &record.transitions[seq].to;
    let went_wrong = |run: &PhaseRun| {
        run.state == PhaseState::Failed
            || record
                .transitions
                .get(run.seq as usize + 1)
                .is_some_and(|left| left.error.is_some())
    };
    record.phases[..seq]
        .iter()
        .rev()
        .find(|run| run.phase == *phase && went_wrong(run))
        .map(|run| run.seq)
}

/// For a visit a redrive made, the visit whose jobs it carried.
fn redriven_from(record: &FlowRecord, seq: u32) -> Option<u32> {
    let seq = seq as usize;
    record.transitions[seq]
        .retried_by
        .and_then(|_| failed_visit_before(record, seq))
}

/// How a phase timeout's error begins.
pub(crate) const PHASE_TIMED_OUT: &str = "the phase did not complete within";

/// An error the clock made: a flow's deadline or a phase's timeout.
pub(crate) fn is_clock_error(error: &FlowError) -> bool {
    error.handler.is_none()
        && (error.message == rules::DEADLINE_PASSED || error.message.starts_with(PHASE_TIMED_OUT))
}
