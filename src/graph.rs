//! Drawing a workflow as a graph, for people to check its shape at a glance.
//!
//! Two text formats cover the usual places a drawing ends up: Mermaid renders
//! inside Markdown (READMEs, issues, the dashboard), Graphviz DOT feeds `dot`
//! for images. Both show the same things: each phase with its handlers, where
//! flows start and end, and the success and error transitions.

use std::fmt::Write;

use crate::definition::{HandlerSpec, Next, Phase, Workflow};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

pub fn render(workflow: &Workflow, format: GraphFormat) -> String {
    match format {
        GraphFormat::Mermaid => mermaid(workflow),
        GraphFormat::Dot => dot(workflow),
    }
}

/// `PageDownloader` or `PageDownloader (~> 1.2)`.
fn handler_label(handler: &HandlerSpec) -> String {
    match &handler.version {
        Some(version) => format!("{} ({version})", handler.name),
        None => handler.name.to_string(),
    }
}

/// The phase name, then one line per handler, each piece escaped with
/// `escape` before the format's own line break joins them.
fn phase_label(phase: &Phase, escape: fn(&str) -> String, line_break: &str) -> String {
    std::iter::once(escape(phase.name.as_str()))
        .chain(
            phase
                .handlers
                .iter()
                .map(|handler| escape(&handler_label(handler))),
        )
        .chain(
            phase
                .wait_for
                .iter()
                .map(|signal| escape(&format!("waits for {signal}"))),
        )
        .chain(phase.subflows.iter().map(|subflows| {
            escape(&match &subflows.for_each {
                Some(pointer) => format!("{} for each {pointer}", subflows.workflow),
                None => format!("child flow: {}", subflows.workflow),
            })
        }))
        .collect::<Vec<_>>()
        .join(line_break)
}

/// An edge's kind: the way on (a branch's condition, `else` for a default
/// branch), or the error transition.
#[derive(Clone, Debug, PartialEq)]
enum Edge {
    Next(Option<String>),
    Error,
}

/// (from, to, kind) by phase index, skipping targets that name no phase so
/// that drawing an unvalidated workflow cannot go wrong.
fn edges(workflow: &Workflow) -> Vec<(usize, usize, Edge)> {
    let index_of = |name: &str| {
        workflow
            .phases
            .iter()
            .position(|phase| phase.name.as_str() == name)
    };
    let mut edges = Vec::new();
    for (from, phase) in workflow.phases.iter().enumerate() {
        match &phase.transitions_to {
            Some(Next::Phase(to)) => {
                if let Some(to) = index_of(to.as_str()) {
                    edges.push((from, to, Edge::Next(None)));
                }
            }
            Some(Next::Branches(branches)) => {
                for branch in branches {
                    let label = match &branch.when {
                        Some(when) => when.to_string(),
                        None => "else".to_owned(),
                    };
                    if let Some(to) = index_of(branch.to.as_str()) {
                        edges.push((from, to, Edge::Next(Some(label))));
                    }
                }
            }
            None => {}
        }
        if let Some(to) = phase
            .on_error_transition_to
            .as_ref()
            .and_then(|t| index_of(t.as_str()))
        {
            edges.push((from, to, Edge::Error));
        }
    }
    edges
}

/// Mermaid node ids are generated (`p0`, `p1`, ...) because phase names may
/// hold characters Mermaid's grammar reserves; the real name is the label.
fn mermaid(workflow: &Workflow) -> String {
    let mut out = String::from("flowchart LR\n");
    for (index, phase) in workflow.phases.iter().enumerate() {
        let label = phase_label(phase, escape_mermaid, "<br/>");
        let (open, close) = if phase.is_initial {
            ("([", "])")
        } else if phase.is_final {
            ("(((", ")))")
        } else {
            ("[", "]")
        };
        let _ = writeln!(out, "    p{index}{open}\"{label}\"{close}");
    }
    for (from, to, edge) in edges(workflow) {
        let _ = match edge {
            Edge::Error => writeln!(out, "    p{from} -. error .-> p{to}"),
            Edge::Next(None) => writeln!(out, "    p{from} --> p{to}"),
            Edge::Next(Some(label)) => {
                writeln!(out, "    p{from} -->|\"{}\"| p{to}", escape_mermaid(&label))
            }
        };
    }
    out.push_str("    classDef initial fill:#e3f2fd,stroke:#1565c0,stroke-width:2px\n");
    out.push_str("    classDef final fill:#e8f5e9,stroke:#2e7d32,stroke-width:3px\n");
    for (class, wanted) in [
        (
            "initial",
            (|phase: &Phase| phase.is_initial) as fn(&Phase) -> bool,
        ),
        ("final", |phase: &Phase| phase.is_final),
    ] {
        let ids: Vec<String> = workflow
            .phases
            .iter()
            .enumerate()
            .filter(|(_, phase)| wanted(phase))
            .map(|(index, _)| format!("p{index}"))
            .collect();
        if !ids.is_empty() {
            let _ = writeln!(out, "    class {} {class}", ids.join(","));
        }
    }
    out
}

/// Mermaid reads `"`, `<`, `>`, `&` and `#` inside quoted labels; its entity
/// codes show them literally instead.
fn escape_mermaid(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("#quot;"),
            '#' => escaped.push_str("#35;"),
            '<' => escaped.push_str("#lt;"),
            '>' => escaped.push_str("#gt;"),
            '&' => escaped.push_str("#amp;"),
            '\n' | '\r' => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

fn dot(workflow: &Workflow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape_dot(workflow.name.as_str()));
    out.push_str("    rankdir=LR;\n");
    out.push_str("    node [shape=box, style=rounded];\n");
    for phase in &workflow.phases {
        let id = escape_dot(phase.name.as_str());
        let label = phase_label(phase, escape_dot, "\\n");
        let mut attributes = format!("label=\"{label}\"");
        if phase.is_initial {
            attributes.push_str(", style=\"rounded,filled,bold\", fillcolor=\"#e3f2fd\"");
        }
        if phase.is_final {
            attributes.push_str(", peripheries=2");
        }
        let _ = writeln!(out, "    \"{id}\" [{attributes}];");
    }
    for (from, to, edge) in edges(workflow) {
        let from = escape_dot(workflow.phases[from].name.as_str());
        let to = escape_dot(workflow.phases[to].name.as_str());
        let _ = match edge {
            Edge::Error => writeln!(
                out,
                "    \"{from}\" -> \"{to}\" \
                 [label=\"error\", style=dashed, color=red, fontcolor=red];"
            ),
            Edge::Next(None) => writeln!(out, "    \"{from}\" -> \"{to}\";"),
            Edge::Next(Some(label)) => writeln!(
                out,
                "    \"{from}\" -> \"{to}\" [label=\"{}\"];",
                escape_dot(&label)
            ),
        };
    }
    out.push_str("}\n");
    out
}

/// Inside a DOT quoted string only `"` and `\` are special; a raw line break
/// becomes `\n` so a name cannot split the statement.
fn escape_dot(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::parse_definition;

    const SEARCH: &str = r#"{
      "workflow": "search",
      "phases": {
        "pending": {"is_initial": true, "transitions_to": "searching", "on_error_transition_to": "error"},
        "searching": {"transitions_to": "fetching-pages", "on_error_transition_to": "error", "handlers": ["GoogleSearcher"]},
        "fetching-pages": {"transitions_to": "finished", "on_error_transition_to": "error", "handlers": ["PageDownloader"]},
        "error": {"is_final": true, "handlers": ["ErrorEmailer"]},
        "finished": {"is_final": true, "handlers": ["JobFinisher"]}
      }
    }"#;

    fn search() -> Workflow {
        parse_definition(SEARCH).unwrap()
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().map(str::trim).collect()
    }

    #[test]
    fn mermaid_draws_every_phase_and_transition() {
        let drawn = render(&search(), GraphFormat::Mermaid);
        let lines = lines(&drawn);
        assert_eq!(lines[0], "flowchart LR");
        for expected in [
            r#"p0(["pending"])"#,
            r#"p1["searching<br/>GoogleSearcher"]"#,
            r#"p2["fetching-pages<br/>PageDownloader"]"#,
            r#"p3((("error<br/>ErrorEmailer")))"#,
            r#"p4((("finished<br/>JobFinisher")))"#,
            "p0 --> p1",
            "p1 --> p2",
            "p2 --> p4",
            "p0 -. error .-> p3",
            "p1 -. error .-> p3",
            "p2 -. error .-> p3",
            "class p0 initial",
            "class p3,p4 final",
        ] {
            assert!(
                lines.contains(&expected),
                "missing {expected:?} in\n{drawn}"
            );
        }
        let edges = lines
            .iter()
            .filter(|line| line.contains("-->") || line.contains(".->"));
        assert_eq!(edges.count(), 6);
    }

    #[test]
    fn branches_are_drawn_with_their_conditions() {
        let workflow = parse_definition(
            r#"{"workflow": "poll", "phases": {
                "check": {"is_initial": true, "transitions_to": [
                    {"when": {"path": "/outputs/check/C/0/ready", "equals": true}, "to": "done"},
                    {"when": {"path": "/data/mode", "in": ["a", "b"]}, "to": "done"},
                    {"to": "check"}]},
                "done": {"is_final": true}}}"#,
        )
        .unwrap();
        let mermaid = render(&workflow, GraphFormat::Mermaid);
        for expected in [
            r#"p0 -->|"/outputs/check/C/0/ready = true"| p1"#,
            r#"p0 -->|"/data/mode in [#quot;a#quot;,#quot;b#quot;]"| p1"#,
            r#"p0 -->|"else"| p0"#,
        ] {
            assert!(
                lines(&mermaid).contains(&expected),
                "missing {expected:?} in\n{mermaid}"
            );
        }
        let dot = render(&workflow, GraphFormat::Dot);
        assert!(
            lines(&dot)
                .contains(&r#""check" -> "done" [label="/outputs/check/C/0/ready = true"];"#),
            "{dot}"
        );
        assert!(
            lines(&dot).contains(&r#""check" -> "check" [label="else"];"#),
            "{dot}"
        );
    }

    #[test]
    fn dot_draws_every_phase_and_transition() {
        let drawn = render(&search(), GraphFormat::Dot);
        let lines = lines(&drawn);
        assert_eq!(lines[0], r#"digraph "search" {"#);
        assert_eq!(lines.last(), Some(&"}"));
        for expected in [
            "rankdir=LR;",
            r##""pending" [label="pending", style="rounded,filled,bold", fillcolor="#e3f2fd"];"##,
            r#""searching" [label="searching\nGoogleSearcher"];"#,
            r#""finished" [label="finished\nJobFinisher", peripheries=2];"#,
            r#""pending" -> "searching";"#,
            r#""fetching-pages" -> "finished";"#,
            r#""searching" -> "error" [label="error", style=dashed, color=red, fontcolor=red];"#,
        ] {
            assert!(
                lines.contains(&expected),
                "missing {expected:?} in\n{drawn}"
            );
        }
    }

    #[test]
    fn handler_versions_appear_in_labels() {
        let workflow = parse_definition(
            r#"{"workflow": "w", "phases": {"only": {"is_initial": true, "is_final": true,
                "handlers": [{"name": "Fetch", "version": "~> 1.2"}]}}}"#,
        )
        .unwrap();
        let mermaid = render(&workflow, GraphFormat::Mermaid);
        assert!(
            mermaid.contains(r#"p0(["only<br/>Fetch (~#gt; 1.2)"])"#),
            "{mermaid}"
        );
        assert!(mermaid.contains("class p0 initial\n"));
        assert!(mermaid.contains("class p0 final\n"));
        let dot = render(&workflow, GraphFormat::Dot);
        assert!(dot.contains(r#"label="only\nFetch (~> 1.2)""#), "{dot}");
    }

    #[test]
    fn names_with_quotes_and_backslashes_are_escaped() {
        // New definitions cannot have such names; a stored one, from before
        // the name rules, still can.
        let workflow = crate::definition::parse_stored_definition(
            &serde_json::from_str(
                r#"{"workflow": "say \"hi\"", "phases": {
                "the \"start\"": {"is_initial": true, "transitions_to": "back\\slash"},
                "back\\slash": {"is_final": true}
            }}"#,
            )
            .unwrap(),
        )
        .unwrap();
        let dot = render(&workflow, GraphFormat::Dot);
        let lines = lines(&dot);
        assert_eq!(lines[0], r#"digraph "say \"hi\"" {"#);
        assert!(
            lines.contains(&r#""the \"start\"" -> "back\\slash";"#),
            "{dot}"
        );
        assert!(
            lines.contains(&r#""back\\slash" [label="back\\slash", peripheries=2];"#),
            "{dot}"
        );

        let mermaid = render(&workflow, GraphFormat::Mermaid);
        assert!(
            mermaid.contains(r#"p0(["the #quot;start#quot;"])"#),
            "{mermaid}"
        );
        assert!(mermaid.contains(r#"p1((("back\slash")))"#), "{mermaid}");
    }
}
