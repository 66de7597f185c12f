//! Reading a workflow definition from JSON, fault by fault.
//!
//! serde's derive stops at the first error and forgets where it was, while a
//! person fixing a definition wants every fault at once, each with its JSON
//! path and a hint. So this module walks the JSON value by hand, collecting
//! structural faults (unknown fields, wrong types, bad durations and version
//! requirements); the rules that span phases live in `validate` and run only
//! once the structure is sound. `Workflow::to_json` is here too, as the exact
//! inverse of the reading.

use std::time::Duration;

use serde_json::{Map, Value};

use super::fault::{backquoted_list, did_you_mean, shown, Fault, Layout};
use super::{
    pointer_fault, Branch, Condition, DefinitionLimits, HandlerSpec, Next, Phase, Rate,
    RetryPolicy, Strictness, Subflows, Workflow,
};
use crate::ids::{check_name, HandlerName, PhaseName, WorkflowName, NAME_RULE};
use crate::json::JsonPath;
use crate::version::Requirement;

const TOP_LEVEL_FIELDS: &[&str] = &["workflow", "name", "data", "phases", "timeout"];
const PHASE_FIELDS: &[&str] = &[
    "name",
    "is_initial",
    "is_final",
    "transitions_to",
    "on_error_transition_to",
    "handlers",
    "timeout",
    "max_visits",
    "wait_for",
    "subflows",
];
const SUBFLOW_FIELDS: &[&str] = &["workflow", "for_each", "data"];
const BRANCH_FIELDS: &[&str] = &["when", "to"];
const COMPARISONS: &[&str] = &["equals", "in", "less_than", "greater_than", "exists"];
const COMBINATIONS: &[&str] = &["all", "any", "not"];
const CONDITION_FORMS: &str = "write `{\"path\": \"/data/mode\", \"equals\": \"fast\"}` (or `in`, `less_than`, `greater_than`, `exists`), or combine conditions with `{\"all\": [...]}`, `{\"any\": [...]}` or `{\"not\": {...}}`";
const HANDLER_FIELDS: &[&str] = &["name", "version", "retry", "timeout", "concurrency", "rate"];
const RATE_FORMS: &str =
    "write a whole number of starts per second, minute or hour, such as `50/s`, `600/m` or `10/h`";
const RETRY_FIELDS: &[&str] = &["max_attempts", "initial_delay", "max_delay"];

const DURATION_FORMS: &str = "write a number and a unit, such as `200ms`, `30s`, `5m` or `1h`";

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field that may be left out. An explicit `null` counts as left out, the
/// usual JSON convention, so generated definitions need not prune their nulls.
fn optional<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// Reads the structure of a definition: the workflow it describes and the
/// shape it was written in, or every structural fault found.
pub(super) fn read(
    value: &Value,
    strictness: Strictness,
) -> Result<(Workflow, Layout), Vec<Fault>> {
    let mut reader = Reader {
        faults: Vec::new(),
        strictness,
    };
    let (workflow, layout) = reader.workflow(value);
    if reader.faults.is_empty() {
        Ok((workflow, layout))
    } else {
        Err(reader.faults)
    }
}

/// Walks a definition, noting every structural fault. Where a field is
/// faulty it stands in a default and reads on, so that one run finds all the
/// faults; the resulting workflow is only used when there were none.
struct Reader<'l> {
    faults: Vec<Fault>,
    strictness: Strictness<'l>,
}

impl Reader<'_> {
    fn fault(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    fn wrong_type(&mut self, path: &JsonPath, expected: &str, found: &Value) {
        self.fault(Fault::new(
            path,
            format!("expected {expected}, found {}", describe(found)),
        ));
    }

    fn object<'v>(
        &mut self,
        value: &'v Value,
        path: &JsonPath,
        expected: &str,
    ) -> Option<&'v Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            self.wrong_type(path, expected, value);
        }
        object
    }

    fn unknown_fields(&mut self, object: &Map<String, Value>, path: &JsonPath, known: &[&str]) {
        for key in object.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let hint = did_you_mean(key, known.iter().copied()).unwrap_or_else(|| {
                format!(
                    "known fields here are {}",
                    backquoted_list(known.iter().copied())
                )
            });
            self.fault(
                Fault::new(&path.key(key), format!("unknown field `{}`", shown(key)))
                    .with_hint(hint),
            );
        }
    }

    fn string<'v>(&mut self, value: &'v Value, path: &JsonPath, expected: &str) -> Option<&'v str> {
        let text = value.as_str();
        if text.is_none() {
            self.wrong_type(path, expected, value);
        }
        text
    }

    /// A name that must be a non-empty string.
    fn name(&mut self, value: &Value, path: &JsonPath, what: &str) -> String {
        let Some(name) = self.string(value, path, &format!("a string ({what})")) else {
            return String::new();
        };
        if name.trim().is_empty() {
            self.fault(
                Fault::new(path, format!("the {what} is empty"))
                    .with_hint(format!("give the {what} some visible characters")),
            );
        } else {
            self.name_rule(name, path, what);
        }
        name.to_owned()
    }

    /// New definitions keep to [`NAME_RULE`]; stored ones were accepted
    /// under the rules of their day.
    fn name_rule(&mut self, name: &str, path: &JsonPath, what: &str) {
        if let Strictness::New(_) = self.strictness {
            if let Err(error) = check_name(name) {
                self.fault(Fault::new(path, format!("the {what} {error}")).with_hint(NAME_RULE));
            }
        }
    }

    /// False (after noting a fault) when `count` things are more than
    /// `limit` of the limits allows.
    fn within(
        &mut self,
        count: usize,
        limit: impl Fn(&DefinitionLimits) -> usize,
        path: &JsonPath,
        what: &str,
        flag: &str,
    ) -> bool {
        let Strictness::New(limits) = self.strictness else {
            return true;
        };
        let most = limit(limits);
        if count <= most {
            return true;
        }
        self.fault(
            Fault::new(path, format!("{count} {what}; the most allowed is {most}")).with_hint(
                format!("split the work up, or raise the server's limit (`{flag}`) if it must be this large"),
            ),
        );
        false
    }

    fn flag(&mut self, object: &Map<String, Value>, key: &str, path: &JsonPath) -> bool {
        match optional(object, key) {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                self.wrong_type(&path.key(key), "`true` or `false`", other);
                false
            }
        }
    }

    fn duration(&mut self, value: &Value, path: &JsonPath, is_timeout: bool) -> Option<Duration> {
        let Some(text) = value.as_str() else {
            self.fault(
                Fault::new(
                    path,
                    format!("expected a duration string, found {}", describe(value)),
                )
                .with_hint(DURATION_FORMS),
            );
            return None;
        };
        match humantime::parse_duration(text) {
            Err(_) => {
                self.fault(
                    Fault::new(path, format!("`{}` is not a duration", shown(text)))
                        .with_hint(DURATION_FORMS),
                );
                None
            }
            Ok(duration) if is_timeout && duration.is_zero() => {
                self.fault(
                    Fault::new(path, "a timeout of zero leaves no time to run").with_hint(
                        "give a positive duration such as `30s`, or leave `timeout` out for no limit",
                    ),
                );
                None
            }
            Ok(duration) => Some(duration),
        }
    }

    fn positive_count(&mut self, value: &Value, path: &JsonPath) -> Option<u32> {
        let count = value.as_u64();
        match count {
            Some(0) => self.fault(Fault::new(path, "must be at least 1")),
            Some(count) => match u32::try_from(count) {
                Ok(count) => return Some(count),
                Err(_) => self.fault(Fault::new(
                    path,
                    format!("{count} is too large; the most allowed is {}", u32::MAX),
                )),
            },
            None if value.is_number() => self.fault(Fault::new(
                path,
                format!("expected a whole number of at least 1, found {value}"),
            )),
            None => self.wrong_type(path, "a whole number of at least 1", value),
        }
        None
    }

    fn workflow(&mut self, value: &Value) -> (Workflow, Layout) {
        let root = JsonPath::root();
        let mut workflow = Workflow {
            name: WorkflowName::new(""),
            data: None,
            phases: Vec::new(),
            timeout: None,
        };
        let mut layout = Layout {
            phases_as_list: false,
        };
        let Some(top) = self.object(
            value,
            &root,
            "an object with `workflow` (or `name`) and `phases`",
        ) else {
            return (workflow, layout);
        };
        self.unknown_fields(top, &root, TOP_LEVEL_FIELDS);

        match (top.get("workflow"), top.get("name")) {
            (Some(_), Some(_)) => self.fault(
                Fault::new(
                    &root.key("name"),
                    "both `workflow` and `name` give the workflow's name",
                )
                .with_hint(
                    "keep one of them: `workflow` (with phases keyed by name) \
                     or `name` (with a list of phases)",
                ),
            ),
            (None, None) => self.fault(
                Fault::new(&root, "the workflow has no name")
                    .with_hint("add `\"workflow\": \"<name>\"`"),
            ),
            (Some(name), None) => {
                let name = self.name(name, &root.key("workflow"), "workflow name");
                workflow.name = WorkflowName::new(name);
            }
            (None, Some(name)) => {
                let name = self.name(name, &root.key("name"), "workflow name");
                workflow.name = WorkflowName::new(name);
            }
        }

        if let Some(timeout) = optional(top, "timeout") {
            workflow.timeout = self.duration(timeout, &root.key("timeout"), true);
        }

        if let Some(data) = optional(top, "data") {
            workflow.data = self
                .object(
                    data,
                    &root.key("data"),
                    "an object (the flows' default input data)",
                )
                .cloned();
        }

        let phases_path = root.key("phases");
        match top.get("phases") {
            None => self.fault(Fault::new(&root, "the workflow has no `phases`").with_hint(
                "add `\"phases\": {\"<name>\": {...}}`, \
                     with one phase marked `\"is_initial\": true`",
            )),
            Some(Value::Object(phases)) => {
                if !self.within(
                    phases.len(),
                    |limits| limits.max_phases,
                    &phases_path,
                    "phases",
                    "--max-phases",
                ) {
                    return (workflow, layout);
                }
                for (name, phase) in phases {
                    let phase = self.phase(phase, &phases_path.key(name), Some(name));
                    workflow.phases.push(phase);
                }
            }
            Some(Value::Array(phases)) => {
                layout.phases_as_list = true;
                if !self.within(
                    phases.len(),
                    |limits| limits.max_phases,
                    &phases_path,
                    "phases",
                    "--max-phases",
                ) {
                    return (workflow, layout);
                }
                for (index, phase) in phases.iter().enumerate() {
                    let phase = self.phase(phase, &phases_path.index(index), None);
                    workflow.phases.push(phase);
                }
            }
            Some(other) => self.wrong_type(
                &phases_path,
                "an object of phases keyed by name, or an array of phases",
                other,
            ),
        }
        (workflow, layout)
    }

    /// `key` is the phase's key in the seed's map form; the list form names
    /// the phase in its `name` field instead.
    fn phase(&mut self, value: &Value, path: &JsonPath, key: Option<&str>) -> Phase {
        let mut phase = Phase {
            name: PhaseName::new(key.unwrap_or_default()),
            is_initial: false,
            is_final: false,
            transitions_to: None,
            on_error_transition_to: None,
            handlers: Vec::new(),
            timeout: None,
            max_visits: None,
            wait_for: None,
            subflows: None,
        };
        let Some(object) = self.object(value, path, "an object (a phase)") else {
            return phase;
        };
        self.unknown_fields(object, path, PHASE_FIELDS);

        let name_path = path.key("name");
        match (key, object.get("name")) {
            (Some(key), given) => {
                if key.trim().is_empty() {
                    self.fault(
                        Fault::new(path, "the phase name is empty")
                            .with_hint("give the phase some visible characters"),
                    );
                } else {
                    self.name_rule(key, path, "phase name");
                }
                // The key already names the phase. A `name` inside is allowed
                // only as a restatement, so a phase copied over from the list
                // form still reads, but two disagreeing names are refused.
                if let Some(given) = given {
                    if let Some(given) = self.string(given, &name_path, "a string (phase name)") {
                        if given != key {
                            self.fault(
                                Fault::new(
                                    &name_path,
                                    format!(
                                        "the phase is keyed `{}` but named `{}`",
                                        shown(key),
                                        shown(given)
                                    ),
                                )
                                .with_hint("remove `name`: the key names the phase"),
                            );
                        }
                    }
                }
            }
            (None, Some(name)) => {
                phase.name = PhaseName::new(self.name(name, &name_path, "phase name"));
            }
            (None, None) => self.fault(
                Fault::new(path, "the phase has no `name`")
                    .with_hint("add `\"name\": \"<phase>\"`"),
            ),
        }

        phase.is_initial = self.flag(object, "is_initial", path);
        phase.is_final = self.flag(object, "is_final", path);
        if let Some(value) = optional(object, "transitions_to") {
            phase.transitions_to = self.next(value, &path.key("transitions_to"));
        }
        if let Some(value) = optional(object, "on_error_transition_to") {
            phase.on_error_transition_to = self
                .string(
                    value,
                    &path.key("on_error_transition_to"),
                    "a string (phase name)",
                )
                .map(PhaseName::new);
        }
        if let Some(value) = optional(object, "max_visits") {
            phase.max_visits = self.positive_count(value, &path.key("max_visits"));
        }
        if let Some(value) = optional(object, "wait_for") {
            let name = self.name(value, &path.key("wait_for"), "signal name");
            phase.wait_for = Some(name);
        }
        if let Some(value) = optional(object, "subflows") {
            phase.subflows = self.subflows(value, &path.key("subflows"));
        }
        if let Some(timeout) = optional(object, "timeout") {
            phase.timeout = self.duration(timeout, &path.key("timeout"), true);
        }
        if let Some(handlers) = optional(object, "handlers") {
            let handlers_path = path.key("handlers");
            match handlers {
                Value::Array(handlers)
                    if self.within(
                        handlers.len(),
                        |limits| limits.max_handlers_per_phase,
                        &handlers_path,
                        "handlers in one phase",
                        "--max-handlers-per-phase",
                    ) =>
                {
                    for (index, handler) in handlers.iter().enumerate() {
                        let handler = self.handler(handler, &handlers_path.index(index));
                        phase.handlers.push(handler);
                    }
                }
                Value::Array(_) => {}
                other => self.wrong_type(&handlers_path, "an array of handlers", other),
            }
        }
        phase
    }

    fn handler(&mut self, value: &Value, path: &JsonPath) -> HandlerSpec {
        let mut handler = HandlerSpec {
            name: HandlerName::new(""),
            version: None,
            retry: RetryPolicy::default(),
            timeout: None,
            concurrency: None,
            rate: None,
        };
        let object = match value {
            Value::String(_) => {
                handler.name = HandlerName::new(self.name(value, path, "handler name"));
                return handler;
            }
            Value::Object(object) => object,
            other => {
                self.wrong_type(
                    path,
                    "a handler name, or an object with the handler's `name`",
                    other,
                );
                return handler;
            }
        };
        self.unknown_fields(object, path, HANDLER_FIELDS);
        match object.get("name") {
            Some(name) => {
                handler.name = HandlerName::new(self.name(name, &path.key("name"), "handler name"));
            }
            None => self.fault(Fault::new(path, "the handler has no `name`").with_hint(
                "add `\"name\": \"<Handler>\"`, or write the handler as a plain string",
            )),
        }
        if let Some(version) = optional(object, "version") {
            let version_path = path.key("version");
            if let Some(text) = self.string(
                version,
                &version_path,
                "a string (a version requirement such as `~> 1.2`)",
            ) {
                match Requirement::parse(text) {
                    Ok(requirement) => handler.version = Some(requirement),
                    Err(error) => self.fault(Fault::new(&version_path, error.to_string())),
                }
            }
        }
        if let Some(retry) = optional(object, "retry") {
            handler.retry = self.retry(retry, &path.key("retry"));
        }
        if let Some(timeout) = optional(object, "timeout") {
            handler.timeout = self.duration(timeout, &path.key("timeout"), true);
        }
        if let Some(concurrency) = optional(object, "concurrency") {
            handler.concurrency = self.positive_count(concurrency, &path.key("concurrency"));
        }
        if let Some(rate) = optional(object, "rate") {
            handler.rate = self.rate(rate, &path.key("rate"));
        }
        handler
    }

    /// A phase name, or a list of branches.
    fn next(&mut self, value: &Value, path: &JsonPath) -> Option<Next> {
        let Value::Array(branches) = value else {
            return self
                .string(
                    value,
                    path,
                    "a phase name, or a list of branches `[{\"when\": {...}, \"to\": PHASE}, ..., {\"to\": PHASE}]`",
                )
                .map(|name| Next::Phase(PhaseName::new(name)));
        };
        let branches = branches
            .iter()
            .enumerate()
            .filter_map(|(index, branch)| self.branch(branch, &path.index(index)))
            .collect();
        Some(Next::Branches(branches))
    }

    fn branch(&mut self, value: &Value, path: &JsonPath) -> Option<Branch> {
        let object = self.object(value, path, "an object (a branch: `when` and `to`)")?;
        self.unknown_fields(object, path, BRANCH_FIELDS);
        let when =
            optional(object, "when").and_then(|when| self.condition(when, &path.key("when")));
        let Some(to) = object.get("to") else {
            self.fault(
                Fault::new(path, "the branch has no `to`")
                    .with_hint("add `\"to\": \"<phase>\"`: the phase the branch leads to"),
            );
            return None;
        };
        let to = self.string(to, &path.key("to"), "a string (phase name)")?;
        Some(Branch {
            when,
            to: PhaseName::new(to),
        })
    }

    fn condition(&mut self, value: &Value, path: &JsonPath) -> Option<Condition> {
        let object = self.object(value, path, "an object (a condition)")?;
        let combination = COMBINATIONS.iter().find(|key| object.contains_key(**key));
        if let Some(&key) = combination {
            self.unknown_fields(object, path, &[key]);
            let inner = &object[key];
            let inner_path = path.key(key);
            return match (key, inner) {
                ("not", inner) => self
                    .condition(inner, &inner_path)
                    .map(|c| Condition::Not(Box::new(c))),
                (_, Value::Array(items)) => {
                    let items: Vec<Condition> = items
                        .iter()
                        .enumerate()
                        .filter_map(|(index, item)| self.condition(item, &inner_path.index(index)))
                        .collect();
                    Some(if key == "all" {
                        Condition::All(items)
                    } else {
                        Condition::Any(items)
                    })
                }
                (_, other) => {
                    self.wrong_type(&inner_path, "an array of conditions", other);
                    None
                }
            };
        }
        let mut known = vec!["path"];
        known.extend(COMPARISONS);
        self.unknown_fields(object, path, &known);
        let comparisons: Vec<&str> = COMPARISONS
            .iter()
            .copied()
            .filter(|key| object.contains_key(*key))
            .collect();
        let Some(path_value) = object.get("path") else {
            self.fault(Fault::new(path, "the condition has no `path`").with_hint(CONDITION_FORMS));
            return None;
        };
        let pointer = self
            .string(
                path_value,
                &path.key("path"),
                "a JSON Pointer such as `/data/mode`",
            )?
            .to_owned();
        if let Some(fault) = pointer_fault(&pointer) {
            self.fault(Fault::new(&path.key("path"), fault).with_hint(
                "a JSON Pointer (RFC 6901) into `{\"data\": ..., \"outputs\": ...}`, such as `/outputs/searching/GoogleSearcher/0/count`",
            ));
        }
        let [comparison] = comparisons.as_slice() else {
            let message = if comparisons.is_empty() {
                "the condition compares nothing".to_owned()
            } else {
                format!(
                    "the condition has {} comparisons; give one, and combine conditions with `all` or `any`",
                    backquoted_list(comparisons.iter().copied())
                )
            };
            self.fault(Fault::new(path, message).with_hint(CONDITION_FORMS));
            return None;
        };
        let operand = &object[*comparison];
        let operand_path = path.key(comparison);
        let number = |reader: &mut Self| {
            let found = operand.as_f64();
            if found.is_none() {
                reader.wrong_type(&operand_path, "a number", operand);
            }
            found
        };
        match *comparison {
            "equals" => Some(Condition::Equals {
                path: pointer,
                value: operand.clone(),
            }),
            "in" => match operand {
                Value::Array(values) => Some(Condition::In {
                    path: pointer,
                    values: values.clone(),
                }),
                other => {
                    self.wrong_type(&operand_path, "an array of values", other);
                    None
                }
            },
            "less_than" => number(self).map(|than| Condition::LessThan {
                path: pointer,
                than,
            }),
            "greater_than" => number(self).map(|than| Condition::GreaterThan {
                path: pointer,
                than,
            }),
            _ => match operand {
                Value::Bool(exists) => Some(Condition::Exists {
                    path: pointer,
                    exists: *exists,
                }),
                other => {
                    self.wrong_type(&operand_path, "`true` or `false`", other);
                    None
                }
            },
        }
    }

    fn subflows(&mut self, value: &Value, path: &JsonPath) -> Option<Subflows> {
        let object = self.object(
            value,
            path,
            "an object: `{\"workflow\": NAME, \"for_each\": POINTER, \"data\": {...}}`",
        )?;
        self.unknown_fields(object, path, SUBFLOW_FIELDS);
        let Some(workflow) = object.get("workflow") else {
            self.fault(Fault::new(path, "`subflows` has no `workflow`").with_hint(
                "name the registered workflow each child flow runs: `\"workflow\": \"<name>\"`",
            ));
            return None;
        };
        let workflow = self.name(workflow, &path.key("workflow"), "workflow name");
        let for_each = match optional(object, "for_each") {
            None => None,
            Some(pointer) => {
                let pointer_path = path.key("for_each");
                let text = self.string(
                    pointer,
                    &pointer_path,
                    "a JSON Pointer such as `/outputs/listing/Lister`",
                )?;
                if let Some(fault) = pointer_fault(text) {
                    self.fault(Fault::new(&pointer_path, fault).with_hint(
                        "point at an array in `{\"data\": ..., \"outputs\": ...}`: one child flow runs per element",
                    ));
                }
                Some(text.to_owned())
            }
        };
        let data = match optional(object, "data") {
            None => serde_json::Map::new(),
            Some(data) => self
                .object(data, &path.key("data"), "an object (data for every child)")?
                .clone(),
        };
        Some(Subflows {
            workflow,
            for_each,
            data,
        })
    }

    fn rate(&mut self, value: &Value, path: &JsonPath) -> Option<Rate> {
        let Some(text) = value.as_str() else {
            self.fault(
                Fault::new(
                    path,
                    format!("expected a rate string, found {}", describe(value)),
                )
                .with_hint(RATE_FORMS),
            );
            return None;
        };
        let rate = Rate::parse(text);
        if rate.is_none() {
            self.fault(
                Fault::new(path, format!("`{}` is not a rate", shown(text))).with_hint(RATE_FORMS),
            );
        }
        rate
    }

    fn retry(&mut self, value: &Value, path: &JsonPath) -> RetryPolicy {
        let mut retry = RetryPolicy::default();
        let Some(object) = self.object(
            value,
            path,
            "an object with `max_attempts`, `initial_delay` and `max_delay`",
        ) else {
            return retry;
        };
        self.unknown_fields(object, path, RETRY_FIELDS);
        if let Some(attempts) = optional(object, "max_attempts") {
            if let Some(attempts) = self.positive_count(attempts, &path.key("max_attempts")) {
                retry.max_attempts = attempts;
            }
        }
        let mut delays_ok = true;
        for (key, target) in [
            ("initial_delay", &mut retry.initial_delay),
            ("max_delay", &mut retry.max_delay),
        ] {
            if let Some(delay) = optional(object, key) {
                // A zero delay is a legitimate "retry at once".
                match self.duration(delay, &path.key(key), false) {
                    Some(delay) => *target = delay,
                    None => delays_ok = false,
                }
            }
        }
        if delays_ok && retry.max_delay < retry.initial_delay {
            let initial = humantime::format_duration(retry.initial_delay);
            let max = humantime::format_duration(retry.max_delay);
            if optional(object, "max_delay").is_some() {
                self.fault(
                    Fault::new(
                        &path.key("max_delay"),
                        format!("`max_delay` ({max}) is shorter than `initial_delay` ({initial})"),
                    )
                    .with_hint("make `max_delay` at least as long as `initial_delay`"),
                );
            } else {
                self.fault(
                    Fault::new(
                        &path.key("initial_delay"),
                        format!(
                            "`initial_delay` ({initial}) is longer than \
                             the default `max_delay` ({max})"
                        ),
                    )
                    .with_hint("set `max_delay` too, at least as long as `initial_delay`"),
                );
            }
        }
        retry
    }
}

impl Workflow {
    /// The canonical JSON of this workflow: the seed's form, with every
    /// default left out, so that `parse_definition_value` reads it back to an
    /// equal workflow.
    pub fn to_json(&self) -> Value {
        let mut top = Map::new();
        top.insert("workflow".into(), self.name.as_str().into());
        if let Some(data) = &self.data {
            top.insert("data".into(), Value::Object(data.clone()));
        }
        if let Some(timeout) = self.timeout {
            top.insert("timeout".into(), duration_json(timeout));
        }
        let phases = self
            .phases
            .iter()
            .map(|phase| (phase.name.to_string(), phase_json(phase)))
            .collect::<Map<_, _>>();
        top.insert("phases".into(), Value::Object(phases));
        Value::Object(top)
    }
}

fn phase_json(phase: &Phase) -> Value {
    let mut object = Map::new();
    if phase.is_initial {
        object.insert("is_initial".into(), true.into());
    }
    if phase.is_final {
        object.insert("is_final".into(), true.into());
    }
    if let Some(next) = &phase.transitions_to {
        object.insert("transitions_to".into(), next.to_json());
    }
    if let Some(target) = &phase.on_error_transition_to {
        object.insert("on_error_transition_to".into(), target.as_str().into());
    }
    if !phase.handlers.is_empty() {
        let handlers = phase.handlers.iter().map(handler_json).collect();
        object.insert("handlers".into(), Value::Array(handlers));
    }
    if let Some(timeout) = phase.timeout {
        object.insert("timeout".into(), duration_json(timeout));
    }
    if let Some(max_visits) = phase.max_visits {
        object.insert("max_visits".into(), max_visits.into());
    }
    if let Some(signal) = &phase.wait_for {
        object.insert("wait_for".into(), signal.as_str().into());
    }
    if let Some(subflows) = &phase.subflows {
        let mut children = Map::new();
        children.insert("workflow".into(), subflows.workflow.as_str().into());
        if let Some(for_each) = &subflows.for_each {
            children.insert("for_each".into(), for_each.as_str().into());
        }
        if !subflows.data.is_empty() {
            children.insert("data".into(), Value::Object(subflows.data.clone()));
        }
        object.insert("subflows".into(), Value::Object(children));
    }
    Value::Object(object)
}

fn handler_json(handler: &HandlerSpec) -> Value {
    let default_retry = RetryPolicy::default();
    let mut object = Map::new();
    object.insert("name".into(), handler.name.as_str().into());
    if let Some(version) = &handler.version {
        object.insert("version".into(), version.to_string().into());
    }
    if handler.retry != default_retry {
        let mut retry = Map::new();
        if handler.retry.max_attempts != default_retry.max_attempts {
            retry.insert("max_attempts".into(), handler.retry.max_attempts.into());
        }
        if handler.retry.initial_delay != default_retry.initial_delay {
            retry.insert(
                "initial_delay".into(),
                duration_json(handler.retry.initial_delay),
            );
        }
        if handler.retry.max_delay != default_retry.max_delay {
            retry.insert("max_delay".into(), duration_json(handler.retry.max_delay));
        }
        object.insert("retry".into(), Value::Object(retry));
    }
    if let Some(timeout) = handler.timeout {
        object.insert("timeout".into(), duration_json(timeout));
    }
    if let Some(concurrency) = handler.concurrency {
        object.insert("concurrency".into(), concurrency.into());
    }
    if let Some(rate) = handler.rate {
        object.insert("rate".into(), rate.to_string().into());
    }
    if object.len() == 1 {
        // Only the name: the plain-string form says the same, shorter.
        Value::String(handler.name.to_string())
    } else {
        Value::Object(object)
    }
}

fn duration_json(duration: Duration) -> Value {
    humantime::format_duration(duration).to_string().into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{
        parse_definition, parse_definition_value, parse_definition_value_with,
        parse_definition_with, DefinitionError, DefinitionLimits, SEED_SEARCH_JSON,
    };
    use super::*;

    fn seed_value() -> Value {
        serde_json::from_str(SEED_SEARCH_JSON).unwrap()
    }

    fn faults(value: &Value) -> Vec<Fault> {
        match parse_definition_value(value) {
            Err(DefinitionError::Invalid(faults)) => faults,
            other => panic!("expected faults, got {other:?}"),
        }
    }

    /// The faults of the seed definition after `edit`, as (path, fault).
    fn faults_after(edit: impl FnOnce(&mut Value)) -> Vec<Fault> {
        let mut value = seed_value();
        edit(&mut value);
        faults(&value)
    }

    fn only_fault(faults: Vec<Fault>) -> Fault {
        assert_eq!(faults.len(), 1, "expected one fault, got {faults:#?}");
        faults.into_iter().next().unwrap()
    }

    fn gem_value() -> Value {
        json!({
            "name": "search",
            "data": {"query": "rust workflow engines"},
            "phases": [
                {"name": "pending", "is_initial": true, "transitions_to": "searching", "on_error_transition_to": "error"},
                {"name": "searching", "transitions_to": "fetching-pages", "on_error_transition_to": "error", "handlers": ["GoogleSearcher"]},
                {"name": "fetching-pages", "transitions_to": "finished", "on_error_transition_to": "error", "handlers": [{"name": "PageDownloader"}]},
                {"name": "error", "is_final": true, "handlers": ["ErrorEmailer"]},
                {"name": "finished", "is_final": true, "handlers": ["JobFinisher"]}
            ]
        })
    }

    #[test]
    fn the_seed_search_workflow_parses() {
        let workflow = parse_definition(SEED_SEARCH_JSON).unwrap();
        assert_eq!(workflow.name.as_str(), "search");
        assert_eq!(workflow.data, None);
        let names: Vec<&str> = workflow.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pending",
                "searching",
                "fetching-pages",
                "error",
                "finished"
            ]
        );
        assert_eq!(workflow.initial_phase().name.as_str(), "pending");
        let fetching = workflow.phase("fetching-pages").unwrap();
        assert_eq!(
            fetching.transitions_to,
            Some(Next::Phase("finished".into()))
        );
        assert_eq!(
            fetching.on_error_transition_to.as_ref().map(|p| p.as_str()),
            Some("error")
        );
        assert!(!fetching.is_final);
        let handler = &fetching.handlers[0];
        assert_eq!(handler.name.as_str(), "PageDownloader");
        assert_eq!(handler.version, None);
        assert_eq!(handler.retry, RetryPolicy::default());
        assert_eq!(handler.timeout, None);
        assert_eq!(handler.concurrency, None);
        let error = workflow.phase("error").unwrap();
        assert!(error.is_final && !error.is_initial);
        assert_eq!(error.transitions_to, None);
    }

    #[test]
    fn the_gem_list_form_reads_the_same_as_the_seed_form() {
        let seed = parse_definition(SEED_SEARCH_JSON).unwrap();
        let gem = parse_definition_value(&gem_value()).unwrap();
        assert_eq!(gem.name, seed.name);
        assert_eq!(gem.phases, seed.phases);
        let data = gem.data.unwrap();
        assert_eq!(data["query"], "rust workflow engines");
    }

    #[test]
    fn the_seed_form_may_carry_data_too() {
        let mut value = seed_value();
        value["data"] = json!({"limit": 10});
        let workflow = parse_definition_value(&value).unwrap();
        assert_eq!(workflow.data.unwrap()["limit"], 10);
    }

    #[test]
    fn a_full_featured_handler_object_parses() {
        let mut value = seed_value();
        value["phases"]["fetching-pages"]["timeout"] = json!("1h");
        value["phases"]["fetching-pages"]["handlers"] = json!([{
            "name": "PageDownloader",
            "version": "~> 1.2",
            "retry": {"max_attempts": 5, "initial_delay": "200ms", "max_delay": "30s"},
            "timeout": "5m",
            "concurrency": 4
        }]);
        let workflow = parse_definition_value(&value).unwrap();
        let phase = workflow.phase("fetching-pages").unwrap();
        assert_eq!(phase.timeout, Some(Duration::from_secs(3600)));
        let handler = &phase.handlers[0];
        assert_eq!(handler.version, Some(Requirement::parse("~> 1.2").unwrap()));
        assert_eq!(
            handler.retry,
            RetryPolicy {
                max_attempts: 5,
                initial_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(30),
            }
        );
        assert_eq!(handler.timeout, Some(Duration::from_secs(300)));
        assert_eq!(handler.concurrency, Some(4));
    }

    #[test]
    fn retry_fields_left_out_keep_their_defaults() {
        let workflow = parse_definition_value(&{
            let mut value = seed_value();
            value["phases"]["searching"]["handlers"] =
                json!([{"name": "GoogleSearcher", "retry": {"max_attempts": 1}}]);
            value
        })
        .unwrap();
        let retry = &workflow.phase("searching").unwrap().handlers[0].retry;
        assert_eq!(retry.max_attempts, 1);
        assert_eq!(retry.initial_delay, RetryPolicy::default().initial_delay);
        assert_eq!(retry.max_delay, RetryPolicy::default().max_delay);
    }

    #[test]
    fn null_counts_as_left_out() {
        let mut value = seed_value();
        value["phases"]["finished"]["transitions_to"] = Value::Null;
        value["phases"]["finished"]["timeout"] = Value::Null;
        value["data"] = Value::Null;
        let workflow = parse_definition_value(&value).unwrap();
        assert_eq!(workflow, parse_definition(SEED_SEARCH_JSON).unwrap());
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let text = "{\n  \"workflow\": \"search\",\n  \"phases\": {,}\n}";
        match parse_definition(text) {
            Err(DefinitionError::Json {
                line,
                column,
                message,
            }) => {
                assert_eq!((line, column), (3, 14));
                assert!(!message.contains("at line"), "{message}");
                let shown = parse_definition(text).unwrap_err().to_string();
                assert!(
                    shown.starts_with("malformed JSON at line 3, column 14: "),
                    "{shown}"
                );
            }
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn a_key_written_twice_is_a_fault_where_the_second_one_is() {
        let text = r#"{"workflow": "w", "phases": {
            "only": {"is_initial": true, "is_final": true, "handlers": ["A"], "handlers": ["B"]}
        }}"#;
        let fault = match parse_definition(text) {
            Err(DefinitionError::Invalid(faults)) => only_fault(faults),
            other => panic!("expected a fault, got {other:?}"),
        };
        assert_eq!(fault.path, "$.phases.only.handlers");
        assert!(fault.message.contains("twice"), "{}", fault.message);
        assert!(fault.message.contains("line 2"), "{}", fault.message);

        let phase_twice = r#"{"workflow": "w", "phases": {"a": {"is_initial": true, "is_final": true}, "a": {}}}"#;
        let fault = match parse_definition(phase_twice) {
            Err(DefinitionError::Invalid(faults)) => only_fault(faults),
            other => panic!("expected a fault, got {other:?}"),
        };
        assert_eq!(fault.path, "$.phases.a");
    }

    #[test]
    fn a_top_level_that_is_not_an_object_is_refused() {
        let fault = only_fault(faults(&json!(["search"])));
        assert_eq!(fault.path, "$");
        assert!(
            fault.message.contains("found an array"),
            "{}",
            fault.message
        );
    }

    #[test]
    fn both_or_neither_workflow_and_name_is_a_fault() {
        let both = only_fault(faults_after(|v| v["name"] = json!("search")));
        assert_eq!(both.path, "$.name");
        assert!(both.message.contains("both `workflow` and `name`"));

        let neither = only_fault(faults_after(|v| {
            v.as_object_mut().unwrap().remove("workflow");
        }));
        assert_eq!(neither.path, "$");
        assert_eq!(neither.message, "the workflow has no name");
    }

    #[test]
    fn an_unknown_top_level_field_suggests_the_close_one() {
        let fault = only_fault(faults_after(|v| v["dta"] = json!({})));
        assert_eq!(fault.path, "$.dta");
        assert_eq!(fault.message, "unknown field `dta`");
        assert_eq!(fault.hint.as_deref(), Some("did you mean `data`?"));

        let far = only_fault(faults_after(|v| v["owner"] = json!("me")));
        let hint = far.hint.unwrap();
        assert!(
            hint.starts_with("known fields here are `workflow`"),
            "{hint}"
        );
    }

    #[test]
    fn an_unknown_phase_field_suggests_the_close_one() {
        let fault = only_fault(faults_after(|v| {
            let searching = v["phases"]["searching"].as_object_mut().unwrap();
            let target = searching.remove("transitions_to").unwrap();
            searching.insert("transition_to".into(), target);
        }));
        assert_eq!(fault.path, "$.phases.searching.transition_to");
        assert_eq!(
            fault.hint.as_deref(),
            Some("did you mean `transitions_to`?")
        );
        assert_eq!(
            fault.to_string(),
            "$.phases.searching.transition_to: unknown field `transition_to` \
             (did you mean `transitions_to`?)"
        );
    }

    #[test]
    fn unknown_handler_and_retry_fields_are_faults() {
        let found = faults_after(|v| {
            v["phases"]["searching"]["handlers"] = json!([{
                "name": "GoogleSearcher",
                "verison": "1",
                "retry": {"attempts": 2}
            }]);
        });
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.phases.searching.handlers[0].verison",
                "$.phases.searching.handlers[0].retry.attempts"
            ]
        );
        assert_eq!(found[0].hint.as_deref(), Some("did you mean `version`?"));
        assert_eq!(
            found[1].hint.as_deref(),
            Some("did you mean `max_attempts`?")
        );
    }

    #[test]
    fn wrong_json_types_say_what_was_expected() {
        let fault = only_fault(faults_after(|v| {
            v["phases"]["searching"]["transitions_to"] = json!(3)
        }));
        assert_eq!(fault.path, "$.phases.searching.transitions_to");
        assert_eq!(
            fault.message,
            "expected a phase name, or a list of branches `[{\"when\": {...}, \"to\": PHASE}, ..., {\"to\": PHASE}]`, found a number"
        );

        let found = faults_after(|v| {
            v["phases"]["pending"]["is_initial"] = json!("yes");
            v["phases"]["searching"]["handlers"] = json!({"GoogleSearcher": {}});
            v["phases"]["error"]["handlers"] = json!([7]);
            v["phases"]["finished"] = json!("done");
            v["data"] = json!([1]);
        });
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.data",
                "$.phases.pending.is_initial",
                "$.phases.searching.handlers",
                "$.phases.error.handlers[0]",
                "$.phases.finished",
            ]
        );
        assert_eq!(
            found[1].message,
            "expected `true` or `false`, found a string"
        );
        assert_eq!(
            found[2].message,
            "expected an array of handlers, found an object"
        );

        let phases = only_fault(faults_after(|v| v["phases"] = json!("pending")));
        assert_eq!(phases.path, "$.phases");
        assert!(phases.message.ends_with("found a string"));
    }

    #[test]
    fn phase_paths_quote_keys_that_are_not_identifiers() {
        let fault = only_fault(faults_after(|v| {
            v["phases"]["fetching-pages"]["handlers"] =
                json!([{"name": "PageDownloader", "version": "~> x"}]);
        }));
        assert_eq!(
            fault.path,
            r#"$.phases["fetching-pages"].handlers[0].version"#
        );
        assert!(fault
            .message
            .starts_with("`~> x` is not a version requirement"));
        assert!(fault
            .message
            .contains("`~> 1.2`, `>= 1.0, < 2`, or `1.2.3`"));
    }

    #[test]
    fn durations_must_be_readable_and_timeouts_positive() {
        let found = faults_after(|v| {
            v["phases"]["pending"]["timeout"] = json!("soon");
            v["phases"]["searching"]["timeout"] = json!("0s");
            v["phases"]["error"]["timeout"] = json!(30);
            v["phases"]["finished"]["handlers"] =
                json!([{"name": "JobFinisher", "timeout": "0ms"}]);
        });
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.phases.pending.timeout",
                "$.phases.searching.timeout",
                "$.phases.error.timeout",
                "$.phases.finished.handlers[0].timeout",
            ]
        );
        assert_eq!(found[0].message, "`soon` is not a duration");
        assert!(found[0].hint.as_deref().unwrap().contains("`30s`"));
        assert_eq!(found[1].message, "a timeout of zero leaves no time to run");
        assert_eq!(
            found[2].message,
            "expected a duration string, found a number"
        );
    }

    #[test]
    fn rates_and_a_workflow_timeout_are_read_and_written_back() {
        let mut value = seed_value();
        value["timeout"] = json!("2h");
        value["phases"]["searching"]["handlers"] =
            json!([{"name": "GoogleSearcher", "rate": "50/s", "concurrency": 2}]);
        let workflow = parse_definition_value(&value).unwrap();
        assert_eq!(workflow.timeout, Some(Duration::from_secs(7200)));
        let handler = &workflow.phase("searching").unwrap().handlers[0];
        let rate = handler.rate.unwrap();
        assert_eq!((rate.tokens, rate.per), (50, Duration::from_secs(1)));
        assert_eq!(rate.burst(), 50);
        assert_eq!(rate.interval(), Duration::from_millis(20));
        let written = workflow.to_json();
        assert_eq!(written["timeout"], "2h");
        assert_eq!(
            written["phases"]["searching"]["handlers"][0]["rate"],
            "50/s"
        );
        assert_eq!(parse_definition_value(&written).unwrap(), workflow);
        // Slow rates burst to one.
        assert_eq!(Rate::parse("10/h").unwrap().burst(), 1);
        assert_eq!(Rate::parse("600/m").unwrap().burst(), 10);
    }

    #[test]
    fn rates_must_be_counts_per_unit() {
        let found = faults_after(|v| {
            v["timeout"] = json!("0s");
            v["phases"]["searching"]["handlers"] = json!([
                {"name": "A", "rate": "fast"},
                {"name": "B", "rate": "0/s"},
                {"name": "C", "rate": "5/d"},
                {"name": "D", "rate": 5},
                {"name": "E", "rate": "1.5/s"}
            ]);
        });
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.timeout",
                "$.phases.searching.handlers[0].rate",
                "$.phases.searching.handlers[1].rate",
                "$.phases.searching.handlers[2].rate",
                "$.phases.searching.handlers[3].rate",
                "$.phases.searching.handlers[4].rate",
            ]
        );
        assert_eq!(found[1].message, "`fast` is not a rate");
        assert!(found[1].hint.as_deref().unwrap().contains("`50/s`"));
        assert_eq!(found[4].message, "expected a rate string, found a number");
    }

    #[test]
    fn counts_must_be_whole_and_positive() {
        let found = faults_after(|v| {
            v["phases"]["searching"]["handlers"] = json!([
                {"name": "A", "concurrency": 0},
                {"name": "B", "concurrency": -1},
                {"name": "C", "concurrency": 1.5},
                {"name": "D", "concurrency": "4"},
                {"name": "E", "concurrency": 5_000_000_000_u64},
                {"name": "F", "retry": {"max_attempts": 0}}
            ]);
        });
        let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "$.phases.searching.handlers[0].concurrency: must be at least 1",
                "$.phases.searching.handlers[1].concurrency: expected a whole number of at least 1, found -1",
                "$.phases.searching.handlers[2].concurrency: expected a whole number of at least 1, found 1.5",
                "$.phases.searching.handlers[3].concurrency: expected a whole number of at least 1, found a string",
                "$.phases.searching.handlers[4].concurrency: 5000000000 is too large; the most allowed is 4294967295",
                "$.phases.searching.handlers[5].retry.max_attempts: must be at least 1",
            ]
        );
    }

    #[test]
    fn max_delay_may_not_be_shorter_than_initial_delay() {
        let explicit = only_fault(faults_after(|v| {
            v["phases"]["searching"]["handlers"] = json!([{
                "name": "GoogleSearcher",
                "retry": {"initial_delay": "5s", "max_delay": "1s"}
            }]);
        }));
        assert_eq!(
            explicit.path,
            "$.phases.searching.handlers[0].retry.max_delay"
        );
        assert_eq!(
            explicit.message,
            "`max_delay` (1s) is shorter than `initial_delay` (5s)"
        );

        let implied = only_fault(faults_after(|v| {
            v["phases"]["searching"]["handlers"] =
                json!([{"name": "GoogleSearcher", "retry": {"initial_delay": "2m"}}]);
        }));
        assert_eq!(
            implied.path,
            "$.phases.searching.handlers[0].retry.initial_delay"
        );

        let zero = parse_definition_value(&{
            let mut value = seed_value();
            value["phases"]["searching"]["handlers"] =
                json!([{"name": "GoogleSearcher", "retry": {"initial_delay": "0s"}}]);
            value
        });
        assert!(zero.is_ok(), "a zero delay retries at once: {zero:?}");
    }

    #[test]
    fn a_handler_object_needs_a_name() {
        let fault = only_fault(faults_after(|v| {
            v["phases"]["searching"]["handlers"] = json!([{"version": "1"}]);
        }));
        assert_eq!(fault.path, "$.phases.searching.handlers[0]");
        assert_eq!(fault.message, "the handler has no `name`");
    }

    #[test]
    fn a_listed_phase_needs_a_name() {
        let mut value = gem_value();
        value["phases"][1].as_object_mut().unwrap().remove("name");
        let fault = only_fault(faults(&value));
        assert_eq!(fault.path, "$.phases[1]");
        assert_eq!(fault.message, "the phase has no `name`");
    }

    #[test]
    fn a_keyed_phase_may_restate_its_name_but_not_contradict_it() {
        let mut value = seed_value();
        value["phases"]["searching"]["name"] = json!("searching");
        assert!(parse_definition_value(&value).is_ok());

        value["phases"]["searching"]["name"] = json!("looking");
        let fault = only_fault(faults(&value));
        assert_eq!(fault.path, "$.phases.searching.name");
        assert_eq!(
            fault.message,
            "the phase is keyed `searching` but named `looking`"
        );
    }

    #[test]
    fn empty_names_are_faults_where_they_are_written() {
        let found = faults_after(|v| {
            v["workflow"] = json!("");
            v["phases"]["searching"]["handlers"] = json!(["", {"name": " "}]);
        });
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.workflow",
                "$.phases.searching.handlers[0]",
                "$.phases.searching.handlers[1].name",
            ]
        );
        assert_eq!(found[0].message, "the workflow name is empty");
        assert_eq!(found[1].message, "the handler name is empty");

        let mut keyed =
            json!({"workflow": "w", "phases": {"": {"is_initial": true, "is_final": true}}});
        let fault = only_fault(faults(&keyed));
        assert_eq!(fault.path, r#"$.phases[""]"#);
        assert_eq!(fault.message, "the phase name is empty");

        keyed = json!({"name": "", "phases": [{"name": "", "is_initial": true, "is_final": true}]});
        let paths: Vec<String> = faults(&keyed).into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["$.name", "$.phases[0].name"]);
    }

    #[test]
    fn names_keep_to_letters_digits_and_a_few_marks() {
        let long = "w".repeat(10_000);
        for (edit, path) in [
            (json!({"workflow": "../../etc"}), "$.workflow"),
            (json!({"workflow": "evil\u{202e}txt"}), "$.workflow"),
            (json!({"workflow": "tab\there"}), "$.workflow"),
            (json!({"workflow": long}), "$.workflow"),
            (json!({"workflow": "-flag"}), "$.workflow"),
        ] {
            let mut value = seed_value();
            value["workflow"] = edit["workflow"].clone();
            let fault = only_fault(faults(&value));
            assert_eq!(fault.path, path, "{edit}");
            let hint = fault.hint.as_deref().unwrap_or_default();
            assert!(hint.contains("128"), "the hint gives the rule: {hint}");
            assert!(fault.message.len() < 200, "{}", fault.message);
        }
        let found = faults_after(|v| {
            v["phases"]["searching"]["handlers"] =
                json!(["$(touch x)", {"name": "Line\nBreak"}, "Ruby::Style", "v1.2_x-y"]);
        });
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "$.phases.searching.handlers[0]",
                "$.phases.searching.handlers[1].name"
            ]
        );
        assert!(found[0].message.contains("`$`"), "{}", found[0].message);
        assert!(found[1].message.contains("U+000A"), "{}", found[1].message);

        let keyed = only_fault(faults(&json!({
            "workflow": "w",
            "phases": {"a b": {"is_initial": true, "is_final": true}}
        })));
        assert_eq!(keyed.path, r#"$.phases["a b"]"#);
        let listed = only_fault(faults(&json!({
            "name": "w",
            "phases": [{"name": "<script>", "is_initial": true, "is_final": true}]
        })));
        assert_eq!(listed.path, "$.phases[0].name");
        assert!(parse_definition_value(&json!({
            "workflow": "Search.v2:eu-west_1",
            "phases": {"fetching-pages": {"is_initial": true, "is_final": true, "handlers": ["Ns::Page"]}}
        }))
        .is_ok());
    }

    #[test]
    fn definitions_have_a_size_limit() {
        let chain = |length: usize| {
            let phases: Map<String, Value> = (0..length)
                .map(|n| {
                    let phase = if n + 1 == length {
                        json!({"is_final": true})
                    } else {
                        json!({"transitions_to": format!("p{}", n + 1)})
                    };
                    (format!("p{n}"), phase)
                })
                .collect();
            let mut chain = json!({"workflow": "chain", "phases": phases});
            chain["phases"]["p0"]["is_initial"] = json!(true);
            chain
        };
        let many = chain(1_000);
        let fault = only_fault(faults(&many));
        assert_eq!(fault.path, "$.phases");
        assert!(fault.message.contains("1000 phases"), "{}", fault.message);
        let roomy = DefinitionLimits {
            max_phases: 10_000,
            max_bytes: 10 << 20,
            ..DefinitionLimits::default()
        };
        assert!(parse_definition_value_with(&many, &roomy).is_ok());
        assert!(parse_definition_value(&chain(10_000)).is_err());
        assert!(parse_definition_value_with(&chain(10_000), &roomy).is_ok());

        let handlers: Vec<String> = (0..1_000).map(|n| format!("H{n}")).collect();
        let wide = json!({"workflow": "wide", "phases": {
            "only": {"is_initial": true, "is_final": true, "handlers": handlers}
        }});
        let fault = only_fault(faults(&wide));
        assert_eq!(fault.path, "$.phases.only.handlers");
        assert!(fault.message.contains("1000 handlers"), "{}", fault.message);

        let big = json!({"workflow": "big", "data": {"pad": "x".repeat(300 * 1024)}, "phases": {
            "only": {"is_initial": true, "is_final": true}
        }});
        let fault = only_fault(faults(&big));
        assert_eq!(fault.path, "$");
        assert!(fault.message.contains("bytes"), "{}", fault.message);
        let text = big.to_string();
        assert!(matches!(
            parse_definition(&text),
            Err(DefinitionError::Invalid(ref faults)) if faults[0].path == "$"
        ));
        let small = DefinitionLimits {
            max_phases: 1,
            ..DefinitionLimits::default()
        };
        let fault = match parse_definition_with(SEED_SEARCH_JSON, &small) {
            Err(DefinitionError::Invalid(faults)) => only_fault(faults),
            other => panic!("{other:?}"),
        };
        assert!(
            fault.message.contains("the most allowed is 1"),
            "{}",
            fault.message
        );
    }

    #[test]
    fn every_structural_fault_is_reported_at_once() {
        let found = faults_after(|v| {
            v["wokflow"] = json!("x");
            v["phases"]["pending"]["is_intial"] = json!(true);
            v["phases"]["searching"]["timeout"] = json!("never");
            v["phases"]["error"]["handlers"] = json!([{"name": "ErrorEmailer", "version": ""}]);
        });
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(found[0].hint.as_deref(), Some("did you mean `workflow`?"));
        assert_eq!(found[1].hint.as_deref(), Some("did you mean `is_initial`?"));
    }

    #[test]
    fn to_json_writes_the_seed_back_exactly() {
        let workflow = parse_definition(SEED_SEARCH_JSON).unwrap();
        assert_eq!(workflow.to_json(), seed_value());
        let gem = parse_definition_value(&gem_value()).unwrap();
        assert_eq!(parse_definition_value(&gem.to_json()), Ok(gem));
    }

    #[test]
    fn to_json_round_trips_every_extension() {
        let mut value = gem_value();
        value["phases"][1]["timeout"] = json!("90s");
        value["phases"][2]["handlers"] = json!([
            {
                "name": "PageDownloader",
                "version": ">=1.0,<2",
                "retry": {"max_attempts": 7, "initial_delay": "250ms", "max_delay": "2m"},
                "timeout": "1h 30m",
                "concurrency": 8
            },
            {"name": "LinkExtractor", "retry": {"max_delay": "10m"}},
            {"name": "Thumbnailer", "version": "1.0.0"},
            "Indexer"
        ]);
        let workflow = parse_definition_value(&value).unwrap();
        let json = workflow.to_json();
        assert_eq!(parse_definition_value(&json), Ok(workflow));
        let handlers = &json["phases"]["fetching-pages"]["handlers"];
        assert_eq!(
            handlers[0],
            json!({
                "name": "PageDownloader",
                "version": ">= 1.0, < 2",
                "retry": {"max_attempts": 7, "initial_delay": "250ms", "max_delay": "2m"},
                "timeout": "1h 30m",
                "concurrency": 8
            })
        );
        assert_eq!(
            handlers[1],
            json!({"name": "LinkExtractor", "retry": {"max_delay": "10m"}})
        );
        assert_eq!(handlers[3], json!("Indexer"));
        assert_eq!(json["phases"]["searching"]["timeout"], "1m 30s");
        assert_eq!(json["data"], gem_value()["data"]);
    }
}
