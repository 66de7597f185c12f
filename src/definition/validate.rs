//! The rules that span phases: unique names, one way in, transitions that
//! point somewhere, and a way out of every phase.
//!
//! These are what make the promise "a definition that passes validation never
//! leaves a flow stuck" true, so the engine can rely on them instead of
//! checking again. They run only on a structurally sound definition (see
//! `parse`), and the reachability rule runs only once the others pass: with
//! a dangling or duplicated phase name its answer would mislead.

use std::collections::{HashMap, HashSet, VecDeque};

use super::fault::{backquoted_list, did_you_mean, Fault, Layout};
use super::{Branch, Next, Workflow};
use crate::json::JsonPath;

/// Every cross-phase fault of `workflow`; empty when it is valid.
pub(super) fn validate(workflow: &Workflow, layout: Layout) -> Vec<Fault> {
    let mut faults = Vec::new();
    if workflow.phases.is_empty() {
        faults.push(
            Fault::new(
                &JsonPath::root().key("phases"),
                "the workflow has no phases",
            )
            .with_hint(
                "add at least one phase, marking where flows start with `\"is_initial\": true` \
                 and where they end with `\"is_final\": true`",
            ),
        );
        return faults;
    }
    check_unique_names(workflow, layout, &mut faults);
    check_one_initial_phase(workflow, layout, &mut faults);
    check_transitions(workflow, layout, &mut faults);
    if faults.is_empty() {
        check_final_phase_reachable(workflow, layout, &mut faults);
    }
    faults
}

fn check_unique_names(workflow: &Workflow, layout: Layout, faults: &mut Vec<Fault>) {
    let mut first_phase_at: HashMap<&str, usize> = HashMap::new();
    for (index, phase) in workflow.phases.iter().enumerate() {
        let name = phase.name.as_str();
        match first_phase_at.get(name) {
            Some(&first) => faults.push(
                Fault::new(
                    &layout.phase_name_path(index, name),
                    format!(
                        "another phase is already named `{name}` (at `{}`)",
                        layout.phase_path(first, name)
                    ),
                )
                .with_hint("phase names must be unique: rename one of them"),
            ),
            None => {
                first_phase_at.insert(name, index);
            }
        }

        let handlers_path = layout.phase_path(index, name).key("handlers");
        let mut first_handler_at: HashMap<&str, usize> = HashMap::new();
        for (position, handler) in phase.handlers.iter().enumerate() {
            let handler_name = handler.name.as_str();
            match first_handler_at.get(handler_name) {
                Some(&first) => faults.push(
                    Fault::new(
                        &handlers_path.index(position),
                        format!(
                            "handler `{handler_name}` is already listed in this phase (at `{}`)",
                            handlers_path.index(first)
                        ),
                    )
                    .with_hint(
                        "list each handler once in a phase; its `concurrency` sets how many of \
                         its jobs run at once",
                    ),
                ),
                None => {
                    first_handler_at.insert(handler_name, position);
                }
            }
        }
    }
}

fn check_one_initial_phase(workflow: &Workflow, layout: Layout, faults: &mut Vec<Fault>) {
    let initial: Vec<usize> = workflow
        .phases
        .iter()
        .enumerate()
        .filter(|(_, phase)| phase.is_initial)
        .map(|(index, _)| index)
        .collect();
    let Some((&first, extra)) = initial.split_first() else {
        faults.push(
            Fault::new(
                &JsonPath::root().key("phases"),
                "no phase is marked initial",
            )
            .with_hint("mark the phase flows start in with `\"is_initial\": true`"),
        );
        return;
    };
    let first_name = workflow.phases[first].name.as_str();
    for &index in extra {
        let name = workflow.phases[index].name.as_str();
        faults.push(
            Fault::new(
                &layout.phase_path(index, name).key("is_initial"),
                format!("phase `{name}` is marked initial, but so is `{first_name}`"),
            )
            .with_hint(
                "a workflow has exactly one initial phase: remove `is_initial` from all but one",
            ),
        );
    }
}

fn check_transitions(workflow: &Workflow, layout: Layout, faults: &mut Vec<Fault>) {
    let names: Vec<&str> = workflow
        .phases
        .iter()
        .map(|phase| phase.name.as_str())
        .collect();
    for (index, phase) in workflow.phases.iter().enumerate() {
        let name = phase.name.as_str();
        let path = layout.phase_path(index, name);
        if phase.subflows.is_some() && (!phase.handlers.is_empty() || phase.wait_for.is_some()) {
            faults.push(
                Fault::new(
                    &path.key("subflows"),
                    format!("phase `{name}` starts child flows and also has handlers or waits for a signal"),
                )
                .with_hint(
                    "a phase runs handlers, waits for a signal, or starts child flows: one of \
                     them; put the others in phases before or after it",
                ),
            );
        }
        if let (Some(signal), false) = (&phase.wait_for, phase.handlers.is_empty()) {
            faults.push(
                Fault::new(
                    &path.key("wait_for"),
                    format!("phase `{name}` waits for the signal `{signal}` and also has handlers"),
                )
                .with_hint(
                    "a phase waits for a signal or runs handlers, not both: move the handlers \
                     to a phase before or after it",
                ),
            );
        }
        match (&phase.transitions_to, phase.is_final) {
            (Some(next), true) => faults.push(
                Fault::new(
                    &path.key("transitions_to"),
                    format!(
                        "phase `{name}` is final, so it cannot transition to {}",
                        backquoted_list(next.targets().iter().map(|t| t.as_str()))
                    ),
                )
                .with_hint(
                    "remove `transitions_to`, or remove `\"is_final\": true` if flows should go on",
                ),
            ),
            (None, false) => faults.push(
                Fault::new(
                    &path,
                    format!("phase `{name}` is not final and has no `transitions_to`"),
                )
                .with_hint(
                    "name the phase it moves to next with `transitions_to`, \
                     or mark it `\"is_final\": true`",
                ),
            ),
            (Some(Next::Phase(target)), false) => {
                check_target_exists(target.as_str(), &path.key("transitions_to"), &names, faults)
            }
            (Some(Next::Branches(branches)), false) => {
                check_branches(branches, &path.key("transitions_to"), &names, faults)
            }
            (None, true) => {}
        }
        if let Some(target) = &phase.on_error_transition_to {
            check_target_exists(
                target.as_str(),
                &path.key("on_error_transition_to"),
                &names,
                faults,
            );
        }
    }
}

/// Branches lead to phases that exist, and exactly the last one, the
/// default, has no `when`.
fn check_branches(branches: &[Branch], path: &JsonPath, names: &[&str], faults: &mut Vec<Fault>) {
    let Some(last) = branches.len().checked_sub(1) else {
        faults.push(Fault::new(path, "the list of branches is empty").with_hint(
            "list the branches, ending with a default one without `when`: \
                 `[{\"when\": {...}, \"to\": PHASE}, {\"to\": PHASE}]`, or name one phase",
        ));
        return;
    };
    for (index, branch) in branches.iter().enumerate() {
        let branch_path = path.index(index);
        check_target_exists(branch.to.as_str(), &branch_path.key("to"), names, faults);
        match (&branch.when, index == last) {
            (None, false) => faults.push(
                Fault::new(
                    &branch_path,
                    "a branch without `when` is the default, and must come last",
                )
                .with_hint(
                    "move it to the end of the list: the branches after it could never be taken",
                ),
            ),
            (Some(_), true) => faults.push(
                Fault::new(
                    &branch_path.key("when"),
                    "the last branch is the default, taken when no other holds, so it has no `when`",
                )
                .with_hint("add a last branch `{\"to\": PHASE}` without `when`"),
            ),
            _ => {}
        }
    }
}

fn check_target_exists(target: &str, path: &JsonPath, names: &[&str], faults: &mut Vec<Fault>) {
    if names.contains(&target) {
        return;
    }
    let hint = did_you_mean(target, names.iter().copied())
        .unwrap_or_else(|| format!("the phases are {}", backquoted_list(names.iter().copied())));
    faults.push(Fault::new(path, format!("no phase is named `{target}`")).with_hint(hint));
}

/// Walks the transitions backwards from the final phases; whatever the walk
/// never reaches is a phase a flow could enter and never leave.
fn check_final_phase_reachable(workflow: &Workflow, layout: Layout, faults: &mut Vec<Fault>) {
    let index_of: HashMap<&str, usize> = workflow
        .phases
        .iter()
        .enumerate()
        .map(|(index, phase)| (phase.name.as_str(), index))
        .collect();
    let successors: Vec<Vec<usize>> = workflow
        .phases
        .iter()
        .map(|phase| {
            phase
                .transitions_to
                .iter()
                .flat_map(Next::targets)
                .chain(&phase.on_error_transition_to)
                .filter_map(|target| index_of.get(target.as_str()).copied())
                .collect()
        })
        .collect();
    let mut predecessors = vec![Vec::new(); workflow.phases.len()];
    for (from, targets) in successors.iter().enumerate() {
        for &to in targets {
            predecessors[to].push(from);
        }
    }

    let mut can_finish = vec![false; workflow.phases.len()];
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (index, phase) in workflow.phases.iter().enumerate() {
        if phase.is_final {
            can_finish[index] = true;
            queue.push_back(index);
        }
    }
    while let Some(index) = queue.pop_front() {
        for &before in &predecessors[index] {
            if !can_finish[before] {
                can_finish[before] = true;
                queue.push_back(before);
            }
        }
    }

    for (index, phase) in workflow.phases.iter().enumerate() {
        if can_finish[index] {
            continue;
        }
        let name = phase.name.as_str();
        let leads_to = reachable_from(index, &successors);
        let mut message = format!("no final phase can be reached from phase `{name}`");
        if !leads_to.is_empty() {
            let names = leads_to
                .iter()
                .map(|&other| workflow.phases[other].name.as_str());
            message.push_str(&format!(" (it leads only to {})", backquoted_list(names)));
        }
        faults.push(
            Fault::new(&layout.phase_path(index, name), message).with_hint(
                "a flow that enters it could never finish: give it, or a phase it leads to, \
                 a `transitions_to` or `on_error_transition_to` towards a phase marked \
                 `\"is_final\": true`",
            ),
        );
    }
}

/// The phases reachable from `start` in one or more steps, in definition
/// order, so the message lists them the way the author wrote them.
fn reachable_from(start: usize, successors: &[Vec<usize>]) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut stack = successors[start].clone();
    while let Some(index) = stack.pop() {
        if seen.insert(index) {
            stack.extend(&successors[index]);
        }
    }
    let mut reached: Vec<usize> = seen.into_iter().filter(|&index| index != start).collect();
    reached.sort_unstable();
    reached
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::{parse_definition_value, DefinitionError, Next, SEED_SEARCH_JSON};
    use super::*;

    fn faults(value: &Value) -> Vec<Fault> {
        match parse_definition_value(value) {
            Err(DefinitionError::Invalid(faults)) => faults,
            other => panic!("expected faults, got {other:?}"),
        }
    }

    fn faults_after(edit: impl FnOnce(&mut Value)) -> Vec<Fault> {
        let mut value: Value = serde_json::from_str(SEED_SEARCH_JSON).unwrap();
        edit(&mut value);
        faults(&value)
    }

    fn only_fault(faults: Vec<Fault>) -> Fault {
        assert_eq!(faults.len(), 1, "expected one fault, got {faults:#?}");
        faults.into_iter().next().unwrap()
    }

    fn paths(faults: &[Fault]) -> Vec<&str> {
        faults.iter().map(|fault| fault.path.as_str()).collect()
    }

    #[test]
    fn a_workflow_needs_a_phase() {
        let fault = only_fault(faults(&json!({"workflow": "w", "phases": {}})));
        assert_eq!(fault.path, "$.phases");
        assert_eq!(fault.message, "the workflow has no phases");
        let listed = only_fault(faults(&json!({"name": "w", "phases": []})));
        assert_eq!(listed.path, "$.phases");
    }

    fn branching() -> Value {
        json!({"workflow": "w", "phases": {
            "search": {"is_initial": true, "handlers": ["Searcher"], "max_visits": 3,
                       "transitions_to": [
                           {"when": {"path": "/outputs/search/Searcher/0/count", "equals": 0}, "to": "nothing"},
                           {"when": {"any": [{"path": "/data/mode", "in": ["fast", "draft"]},
                                             {"not": {"path": "/data/slow", "exists": true}}]}, "to": "quick"},
                           {"when": {"path": "/data/tries", "less_than": 3}, "to": "search"},
                           {"to": "fetch"}
                       ]},
            "quick": {"is_final": true},
            "fetch": {"is_final": true},
            "nothing": {"is_final": true}
        }})
    }

    #[test]
    fn branches_read_back_exactly_and_loops_are_allowed() {
        let workflow = parse_definition_value(&branching()).unwrap();
        let search = workflow.phase("search").unwrap();
        assert_eq!(search.max_visits, Some(3));
        let Some(Next::Branches(branches)) = &search.transitions_to else {
            panic!("branches");
        };
        assert_eq!(branches.len(), 4);
        assert!(branches[3].when.is_none());
        let again = parse_definition_value(&workflow.to_json()).unwrap();
        assert_eq!(again, workflow);
    }

    #[test]
    fn bad_branches_are_faults_at_their_paths() {
        let mut value = branching();
        let branches = &mut value["phases"]["search"]["transitions_to"];
        branches[0]["to"] = json!("nothnig");
        branches[1]["when"] = json!({"path": "data/mode", "equals": 1});
        branches[2]["when"] = json!({"path": "/data/tries", "less_than": "3", "equals": 3});
        let found = faults(&value);
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.phases.search.transitions_to[1].when.path",
                "$.phases.search.transitions_to[2].when",
            ],
            "{found:#?}"
        );
        assert!(found[0].message.contains("must start with `/`"));
        assert!(
            found[1].message.contains("comparisons; give one"),
            "{}",
            found[1].message
        );
        // The structure sound, the cross-phase rules speak.
        let mut value = branching();
        let branches = &mut value["phases"]["search"]["transitions_to"];
        branches[0]["to"] = json!("nothnig");
        branches.as_array_mut().unwrap().swap(0, 3);
        let found = faults(&value);
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.phases.search.transitions_to[0]",
                "$.phases.search.transitions_to[3].to",
                "$.phases.search.transitions_to[3].when",
            ],
            "{found:#?}"
        );
        assert!(found[0].message.contains("must come last"));
        assert_eq!(found[1].message, "no phase is named `nothnig`");
        assert!(found[1].hint.as_deref().unwrap().contains("`nothing`"));
        let empty = only_fault(faults(&json!({"workflow": "w", "phases": {
            "a": {"is_initial": true, "transitions_to": []}, "b": {"is_final": true}}})));
        assert_eq!(empty.path, "$.phases.a.transitions_to");
        assert_eq!(empty.message, "the list of branches is empty");
    }

    #[test]
    fn a_phase_waits_for_a_signal_or_runs_handlers() {
        let value = json!({"workflow": "w", "phases": {
            "start": {"is_initial": true, "transitions_to": "review"},
            "review": {"wait_for": "approval", "handlers": ["Reviewer"], "transitions_to": "done"},
            "done": {"is_final": true, "wait_for": "sign off"}
        }});
        let found = faults(&value);
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["$.phases.done.wait_for"], "{found:#?}");
        let value = json!({"workflow": "w", "phases": {
            "start": {"is_initial": true, "transitions_to": "review"},
            "review": {"wait_for": "approval", "handlers": ["Reviewer"], "transitions_to": "done"},
            "done": {"is_final": true}
        }});
        let fault = only_fault(faults(&value));
        assert_eq!(fault.path, "$.phases.review.wait_for");
        assert!(fault.message.contains("also has handlers"));
    }

    #[test]
    fn a_branch_loop_with_no_way_out_is_a_fault() {
        let value = json!({"workflow": "w", "phases": {
            "start": {"is_initial": true, "transitions_to": "poll"},
            "poll": {"transitions_to": [{"when": {"path": "/data/x", "exists": true}, "to": "poll"}, {"to": "poll"}]},
            "done": {"is_final": true}
        }});
        let found = faults(&value);
        assert!(
            found.iter().any(|f| f
                .message
                .contains("no final phase can be reached from phase `poll`")),
            "{found:#?}"
        );
    }

    #[test]
    fn a_single_phase_both_initial_and_final_is_valid() {
        let value =
            json!({"workflow": "w", "phases": {"only": {"is_initial": true, "is_final": true}}});
        assert!(parse_definition_value(&value).is_ok());
    }

    #[test]
    fn duplicate_phase_names_point_at_the_second_one() {
        let value = json!({"name": "w", "phases": [
            {"name": "start", "is_initial": true, "transitions_to": "done"},
            {"name": "done", "is_final": true},
            {"name": "start", "is_final": true}
        ]});
        let fault = only_fault(faults(&value));
        assert_eq!(fault.path, "$.phases[2].name");
        assert_eq!(
            fault.message,
            "another phase is already named `start` (at `$.phases[0]`)"
        );
    }

    #[test]
    fn the_same_handler_twice_in_a_phase_points_at_the_second_one() {
        let fault = only_fault(faults_after(|v| {
            v["phases"]["fetching-pages"]["handlers"] =
                json!(["PageDownloader", "Indexer", {"name": "PageDownloader", "version": "2"}]);
        }));
        assert_eq!(fault.path, r#"$.phases["fetching-pages"].handlers[2]"#);
        assert!(fault
            .message
            .contains("(at `$.phases[\"fetching-pages\"].handlers[0]`)"));
    }

    #[test]
    fn the_same_handler_in_two_phases_is_fine() {
        let mut value: Value = serde_json::from_str(SEED_SEARCH_JSON).unwrap();
        value["phases"]["finished"]["handlers"] = json!(["GoogleSearcher"]);
        assert!(parse_definition_value(&value).is_ok());
    }

    #[test]
    fn no_initial_phase_is_a_fault_at_the_phases() {
        let fault = only_fault(faults_after(|v| {
            v["phases"]["pending"]
                .as_object_mut()
                .unwrap()
                .remove("is_initial");
        }));
        assert_eq!(fault.path, "$.phases");
        assert_eq!(fault.message, "no phase is marked initial");
        assert!(fault.hint.unwrap().contains("\"is_initial\": true"));
    }

    #[test]
    fn each_extra_initial_phase_is_a_fault() {
        let found = faults_after(|v| {
            v["phases"]["searching"]["is_initial"] = json!(true);
            v["phases"]["finished"]["is_initial"] = json!(true);
        });
        assert_eq!(
            paths(&found),
            [
                "$.phases.searching.is_initial",
                "$.phases.finished.is_initial"
            ]
        );
        assert_eq!(
            found[0].message,
            "phase `searching` is marked initial, but so is `pending`"
        );
    }

    #[test]
    fn a_misspelt_transition_target_suggests_the_phase() {
        let found = faults_after(|v| {
            v["phases"]["searching"]["transitions_to"] = json!("fetching_pages");
            v["phases"]["pending"]["on_error_transition_to"] = json!("eror");
            v["phases"]["fetching-pages"]["transitions_to"] = json!("somewhere");
        });
        assert_eq!(
            paths(&found),
            [
                "$.phases.pending.on_error_transition_to",
                "$.phases.searching.transitions_to",
                r#"$.phases["fetching-pages"].transitions_to"#,
            ]
        );
        assert_eq!(found[0].message, "no phase is named `eror`");
        assert_eq!(found[0].hint.as_deref(), Some("did you mean `error`?"));
        assert_eq!(
            found[1].hint.as_deref(),
            Some("did you mean `fetching-pages`?")
        );
        assert_eq!(
            found[2].hint.as_deref(),
            Some("the phases are `pending`, `searching`, `fetching-pages`, `error`, `finished`")
        );
    }

    #[test]
    fn a_non_final_phase_needs_a_transition() {
        let fault = only_fault(faults_after(|v| {
            v["phases"]["searching"]
                .as_object_mut()
                .unwrap()
                .remove("transitions_to");
        }));
        assert_eq!(fault.path, "$.phases.searching");
        assert_eq!(
            fault.message,
            "phase `searching` is not final and has no `transitions_to`"
        );
    }

    #[test]
    fn a_final_phase_may_not_transition_but_may_name_an_error_phase() {
        let fault = only_fault(faults_after(|v| {
            v["phases"]["finished"]["transitions_to"] = json!("pending");
        }));
        assert_eq!(fault.path, "$.phases.finished.transitions_to");
        assert_eq!(
            fault.message,
            "phase `finished` is final, so it cannot transition to `pending`"
        );

        let mut value: Value = serde_json::from_str(SEED_SEARCH_JSON).unwrap();
        value["phases"]["finished"]["on_error_transition_to"] = json!("error");
        assert!(parse_definition_value(&value).is_ok());
    }

    #[test]
    fn a_phase_that_cannot_reach_a_final_phase_is_a_fault() {
        let value = json!({"name": "looping", "phases": [
            {"name": "start", "is_initial": true, "transitions_to": "ping", "on_error_transition_to": "failed"},
            {"name": "ping", "transitions_to": "pong"},
            {"name": "pong", "transitions_to": "ping"},
            {"name": "failed", "is_final": true}
        ]});
        let found = faults(&value);
        assert_eq!(paths(&found), ["$.phases[1]", "$.phases[2]"]);
        assert_eq!(
            found[0].message,
            "no final phase can be reached from phase `ping` (it leads only to `pong`)"
        );
        assert!(found[0].hint.as_deref().unwrap().contains("never finish"));
    }

    #[test]
    fn error_transitions_count_as_a_way_out() {
        let value = json!({"workflow": "poll", "phases": {
            "waiting": {"is_initial": true, "transitions_to": "waiting", "on_error_transition_to": "gave-up"},
            "gave-up": {"is_final": true}
        }});
        assert!(parse_definition_value(&value).is_ok());
    }

    #[test]
    fn a_phase_unreachable_from_the_initial_phase_is_allowed() {
        let mut value: Value = serde_json::from_str(SEED_SEARCH_JSON).unwrap();
        value["phases"]["orphan"] = json!({"transitions_to": "finished"});
        assert!(parse_definition_value(&value).is_ok());
    }

    #[test]
    fn reachability_is_not_judged_while_other_rules_fail() {
        // `searching` points nowhere, so it cannot reach a final phase either,
        // but saying so twice would only bury the real fault.
        let fault = only_fault(faults_after(|v| {
            v["phases"]["searching"]["transitions_to"] = json!("nowhere");
            v["phases"]["searching"]
                .as_object_mut()
                .unwrap()
                .remove("on_error_transition_to");
        }));
        assert_eq!(fault.path, "$.phases.searching.transitions_to");
    }

    #[test]
    fn list_form_faults_use_indexes() {
        let value = json!({"name": "w", "phases": [
            {"name": "a", "is_initial": true, "transitions_to": "b"},
            {"name": "b", "transitions_to": "z"},
            {"name": "c", "is_final": true}
        ]});
        let fault = only_fault(faults(&value));
        assert_eq!(fault.path, "$.phases[1].transitions_to");
    }
}
