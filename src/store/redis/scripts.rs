//! The Lua scripts, one file each beside this one, each behind the shared
//! prelude of field names and guards (`hot.rs`); those over the versions
//! of workflows also behind `versioned.lua`, those that admit a task or
//! take a slot behind `admission.lua` and `slots.lua`, those over a rate
//! behind `bucket.lua`, and those over the installation-wide indexes behind
//! `index.lua`.

use redis::Script;

use super::hot::lua_prelude;

pub(super) struct Scripts {
    pub create: Script,
    pub index_create: Script,
    pub index_settle: Script,
    pub index_reopen: Script,
    pub index_remove: Script,
    pub take_slot: Script,
    pub take_token: Script,
    pub enter: Script,
    pub end: Script,
    pub claim: Script,
    pub enumerated: Script,
    pub done: Script,
    pub failure: Script,
    pub facts: Script,
    pub admit_slot: Script,
    pub park: Script,
    pub status: Script,
    pub remove: Script,
    pub redrive: Script,
    pub redriven: Script,
    pub slot: Script,
    pub token: Script,
    pub signal: Script,
    pub take_signal: Script,
    pub record_children: Script,
    pub settle_children: Script,
    pub subscribe: Script,
    pub advance: Script,
    pub unsubscribe: Script,
    pub register: Script,
    pub versions: Script,
    pub schedule_create: Script,
    pub schedule_pause: Script,
    pub schedule_advance: Script,
}

impl Scripts {
    pub fn new() -> Self {
        let prelude = lua_prelude();
        let script = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        let versioned = include_str!("scripts/versioned.lua");
        let over_versions = |body: &str| script(&format!("{versioned}\n{body}"));
        let admission = include_str!("scripts/admission.lua");
        let slots = include_str!("scripts/slots.lua");
        let bucket = include_str!("scripts/bucket.lua");
        let index = include_str!("scripts/index.lua");
        let over_index = |body: &str| script(&format!("{index}\n{body}"));
        Self {
            create: script(include_str!("scripts/create.lua")),
            index_create: over_index(include_str!("scripts/index_create.lua")),
            index_settle: over_index(include_str!("scripts/index_settle.lua")),
            index_reopen: over_index(include_str!("scripts/index_reopen.lua")),
            index_remove: over_index(include_str!("scripts/index_remove.lua")),
            take_slot: script(&format!(
                "{slots}\n{}",
                include_str!("scripts/take_slot.lua")
            )),
            take_token: script(&format!(
                "{bucket}\n{}",
                include_str!("scripts/take_token.lua")
            )),
            enter: script(include_str!("scripts/enter.lua")),
            end: script(include_str!("scripts/end.lua")),
            claim: script(include_str!("scripts/claim.lua")),
            enumerated: script(include_str!("scripts/enumerated.lua")),
            done: script(include_str!("scripts/done.lua")),
            failure: script(include_str!("scripts/failure.lua")),
            facts: script(&format!(
                "{admission}\n{}",
                include_str!("scripts/facts.lua")
            )),
            admit_slot: script(&format!(
                "{admission}\n{slots}\n{}",
                include_str!("scripts/admit_slot.lua")
            )),
            park: script(include_str!("scripts/park.lua")),
            status: script(include_str!("scripts/status.lua")),
            remove: script(include_str!("scripts/remove.lua")),
            redrive: script(include_str!("scripts/redrive.lua")),
            redriven: script(include_str!("scripts/redriven.lua")),
            slot: script(&format!("{slots}\n{}", include_str!("scripts/slot.lua"))),
            token: script(&format!("{bucket}\n{}", include_str!("scripts/token.lua"))),
            signal: script(include_str!("scripts/signal.lua")),
            take_signal: script(include_str!("scripts/take_signal.lua")),
            record_children: script(include_str!("scripts/record_children.lua")),
            settle_children: script(include_str!("scripts/settle_children.lua")),
            subscribe: script(include_str!("scripts/subscribe.lua")),
            advance: script(include_str!("scripts/advance.lua")),
            unsubscribe: script(include_str!("scripts/unsubscribe.lua")),
            register: over_versions(include_str!("scripts/register.lua")),
            versions: over_versions(include_str!("scripts/versions.lua")),
            schedule_create: script(include_str!("scripts/schedule_create.lua")),
            schedule_pause: script(include_str!("scripts/schedule_pause.lua")),
            schedule_advance: script(include_str!("scripts/schedule_advance.lua")),
        }
    }
}
