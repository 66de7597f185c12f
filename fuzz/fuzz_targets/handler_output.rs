//! What command handlers print: enumerate's array of jobs, process's value.
#![no_main]

use distribot::handler::{parse_enumerate_output, parse_process_output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let _ = parse_enumerate_output(&text);
    let _ = parse_process_output(&text);
});
