//! The definition parser and validator on arbitrary bytes: it must answer
//! with a workflow or an error, and what it accepts must round-trip.
#![no_main]

use distribot::definition::{parse_definition, parse_definition_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(workflow) = parse_definition(text) {
        let again = parse_definition_value(&workflow.to_json()).expect("a workflow re-reads");
        assert_eq!(again, workflow);
    }
});
