//! RubyGems-style version requirements and versions on arbitrary text.
#![no_main]

use distribot::version::{Requirement, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(requirement) = Requirement::parse(text) {
        let again = Requirement::parse(&requirement.to_string()).expect("a requirement re-reads");
        assert_eq!(again, requirement);
    }
    if let Ok(version) = Version::parse(text) {
        let _ = version.to_string();
    }
});
