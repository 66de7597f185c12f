//! Schedules: a workflow started on a cron cadence, in a time zone.
//!
//! This module is pure. It reads and checks what an author writes (a
//! name, a cron expression, a time zone, the policies), says when the next
//! tick after an instant comes, and decides what a due tick does: start a
//! flow, or drop the ticks missed while no engine ran. Storing schedules
//! and firing their ticks are the store's and the runtime's
//! (`store::ScheduleStore`, `runtime::Scheduler`).
//!
//! Cron expressions have 5 fields (minute hour day-of-month month
//! day-of-week), or 6 with seconds first, or are one of the macros
//! (`@hourly`, `@daily`, ...). They are read by the `croner` crate; the
//! field that does not parse is found here, field by field, so that the
//! error can name it.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{check_name, FlowId, NAME_RULE};
use crate::time::Timestamp;

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// The longest cron expression accepted, in bytes.
pub const MAX_CRON_BYTES: usize = 256;

/// A due tick is on time while it is less late than its grace: the time
/// between it and the tick after it, at least this...
pub const MIN_GRACE: Duration = Duration::from_secs(5);
/// ...and at most this. Later than that, the tick was missed: no engine
/// ran when it came, and the schedule's catch-up policy decides.
pub const MAX_GRACE: Duration = Duration::from_secs(60);

/// The macros a cron expression may be, and the 5 fields each stands for.
pub const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// What a tick does while the flow the schedule started last still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick starts nothing (the default).
    #[default]
    Skip,
    /// The tick starts a flow all the same.
    Allow,
}

impl Overlap {
    pub const ALL: [Overlap; 2] = [Overlap::Skip, Overlap::Allow];

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.as_str() == text)
    }
}

/// What a schedule does about the ticks it missed while no engine ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Drop them, and wait for the next tick to come (the default).
    #[default]
    Skip,
    /// Start one flow for all of them.
    One,
}

impl CatchUp {
    pub const ALL: [CatchUp; 2] = [CatchUp::Skip, CatchUp::One];

    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::One => "one",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.as_str() == text)
    }
}

/// The part of a schedule a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleField {
    Name,
    Workflow,
    Cron,
    Timezone,
    Data,
    Overlap,
    CatchUp,
}

impl ScheduleField {
    /// Its name in the API's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleField::Name => "name",
            ScheduleField::Workflow => "workflow",
            ScheduleField::Cron => "cron",
            ScheduleField::Timezone => "timezone",
            ScheduleField::Data => "data",
            ScheduleField::Overlap => "overlap",
            ScheduleField::CatchUp => "catch_up",
        }
    }
}

/// Why a schedule cannot be taken as written: the field at fault, and a
/// message that says what is wrong and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    pub field: ScheduleField,
    pub message: String,
}

impl ScheduleError {
    fn new(field: ScheduleField, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A schedule as its author writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub name: String,
    /// A registered workflow's name, read again at every tick.
    pub workflow: String,
    pub cron: String,
    /// An IANA time zone; [`DEFAULT_TIMEZONE`] when none is given.
    pub timezone: String,
    /// The data of every flow it starts.
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
}

impl ScheduleSpec {
    /// Checks every field, and writes the time zone as the tz database
    /// does (`europe/lisbon` is kept as `Europe/Lisbon`). The cadence is
    /// what [`Cadence::next_after`] asks.
    pub fn check(mut self, now: Timestamp) -> Result<(Self, Cadence), ScheduleError> {
        check_schedule_name(&self.name)?;
        if self.workflow.trim().is_empty() {
            return Err(ScheduleError::new(
                ScheduleField::Workflow,
                "the workflow is empty: name a registered workflow",
            ));
        }
        let cadence = Cadence::new(&self.cron, &self.timezone)?;
        if cadence.next_after(now).is_none() {
            return Err(ScheduleError::new(
                ScheduleField::Cron,
                format!(
                    "the cron expression `{}` never matches a time to come (such as the 30th of February); check its day-of-month, month and day-of-week fields",
                    self.cron.trim()
                ),
            ));
        }
        self.cron = self.cron.trim().to_owned();
        self.timezone = cadence.timezone().to_owned();
        Ok((self, cadence))
    }
}

/// A schedule as the store keeps it: what its author wrote, and where its
/// ticks are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    pub paused: bool,
    /// The tick an engine fires next; `None` once no tick is to come.
    pub next_tick: Option<Timestamp>,
    /// The latest tick handled, whether it started a flow or not.
    pub last_tick: Option<Timestamp>,
    /// The flow the latest tick that started one started.
    pub last_flow: Option<FlowId>,
    /// Why the latest tick started no flow, when it did not.
    pub last_skip: Option<String>,
    pub created_at: Timestamp,
}

impl Schedule {
    /// A new schedule, its first tick the first after `now`.
    pub fn new(spec: ScheduleSpec, cadence: &Cadence, now: Timestamp) -> Self {
        Self {
            spec,
            paused: false,
            next_tick: cadence.next_after(now),
            last_tick: None,
            last_flow: None,
            last_skip: None,
            created_at: now,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The cadence of a stored schedule (checked when it was stored).
    pub fn cadence(&self) -> Result<Cadence, ScheduleError> {
        Cadence::new(&self.spec.cron, &self.spec.timezone)
    }
}

/// What an engine records about a tick it handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// The tick started this flow (or found the flow it started before).
    Started(FlowId),
    /// The tick started nothing, for this reason.
    Skipped(String),
}

/// A schedule's name: the rule of workflow names (it goes into keys and
/// URLs just the same).
pub fn check_schedule_name(name: &str) -> Result<(), ScheduleError> {
    if name.is_empty() {
        return Err(ScheduleError::new(
            ScheduleField::Name,
            format!("the schedule's name is empty; {NAME_RULE}"),
        ));
    }
    check_name(name).map_err(|why| {
        ScheduleError::new(
            ScheduleField::Name,
            format!("the schedule's name `{name}` {why}; {NAME_RULE}"),
        )
    })
}

/// The idempotency key of the flow a tick starts: the same for every
/// engine that fires the tick, and for a retry after a crash, so that a
/// tick starts one flow however often it is fired.
pub fn tick_key(schedule: &str, tick: Timestamp) -> String {
    format!("schedule:{schedule}:{}", tick_text(tick))
}

/// A tick in RFC 3339, to the second, in UTC.
pub fn tick_text(tick: Timestamp) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(tick.millis() / 1000);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// When a schedule's ticks come: its cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct Cadence {
    cron: Cron,
    zone: Tz,
}

impl Cadence {
    /// Reads a cron expression and a time zone (empty: UTC). The error
    /// names the field of the expression that does not parse, or the zone
    /// that does not exist, and says how to write it.
    pub fn new(cron: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let zone = if timezone.trim().is_empty() {
            Tz::UTC
        } else {
            parse_timezone(timezone)?
        };
        Ok(Self {
            cron: parse_cron(cron)?,
            zone,
        })
    }

    /// The time zone's name as the tz database writes it.
    pub fn timezone(&self) -> &'static str {
        self.zone.name()
    }

    /// The first tick strictly after `at`; `None` when none is to come.
    ///
    /// Ticks are whole seconds. Across a change of the clocks, ticks
    /// follow cron's custom: a time the clocks skip comes at the first
    /// instant after the gap for a fixed time of day (`30 2 * * *`), and
    /// not at all for intervals (`*/15 * * * *`); a time that comes twice
    /// comes once for a fixed time of day, and twice for intervals.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        let seconds = i64::try_from(at.millis() / 1000).ok()?;
        let local = DateTime::<Utc>::from_timestamp(seconds, 0)?.with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok().map(Timestamp)
    }

    /// How late `tick` may be handled and still count as on time.
    pub fn grace(&self, tick: Timestamp) -> Duration {
        let period = self
            .next_after(tick)
            .map(|next| tick.until(next))
            .unwrap_or(MAX_GRACE);
        period.clamp(MIN_GRACE, MAX_GRACE)
    }
}

/// What a due tick does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Start a flow for the tick, then wait for `next` (which may be due
    /// already: a few ticks late on a busy machine are each fired).
    /// `caught_up` when the tick stands for every tick missed up to now.
    Fire {
        next: Option<Timestamp>,
        caught_up: bool,
    },
    /// Drop every tick missed up to now, and wait for `next`.
    Drop { next: Option<Timestamp> },
}

/// Decides what the tick `tick` of a schedule does at `now`: `None` when it
/// is not due yet. A tick handled within its grace
/// ([`Cadence::grace`]) fires; a later one was missed while no engine
/// ran, and `catch_up` decides: `Skip` drops it and every tick up to now,
/// `One` fires it once for all of them. Either way the next tick is the
/// first after `now`.
pub fn decide(
    cadence: &Cadence,
    tick: Timestamp,
    now: Timestamp,
    catch_up: CatchUp,
) -> Option<Due> {
    if now < tick {
        return None;
    }
    if tick.until(now) <= cadence.grace(tick) {
        return Some(Due::Fire {
            next: cadence.next_after(tick),
            caught_up: false,
        });
    }
    let next = cadence.next_after(now);
    Some(match catch_up {
        CatchUp::Skip => Due::Drop { next },
        CatchUp::One => Due::Fire {
            next,
            caught_up: true,
        },
    })
}

/// The fields of a cron expression, in order, for 5 and for 6 fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    fn range(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    /// How to write the field, for messages.
    fn syntax(self) -> String {
        let (low, high) = self.range();
        let extra = match self {
            Field::DayOfMonth => ", `L` for the last day, `15W` for the weekday nearest the 15th",
            Field::Month => ", or JAN to DEC",
            Field::DayOfWeek => {
                " (0 and 7 are Sunday), or SUN to SAT, `5#2` for the second Friday, `5#L` for the last"
            }
            _ => "",
        };
        let article = if self == Field::Hour { "an" } else { "a" };
        format!(
            "{article} {} is a number from {low} to {high}{extra}; or `*`, a range `a-b`, a list `a,b`, a step `*/n` or `a-b/n`",
            self.name()
        )
    }
}

const FIVE: [Field; 5] = [
    Field::Minute,
    Field::Hour,
    Field::DayOfMonth,
    Field::Month,
    Field::DayOfWeek,
];
const SIX: [Field; 6] = [
    Field::Second,
    Field::Minute,
    Field::Hour,
    Field::DayOfMonth,
    Field::Month,
    Field::DayOfWeek,
];

const CRON_FORM: &str = "write 5 fields (minute hour day-of-month month day-of-week, such as `0 2 * * *`), 6 with seconds first (`*/10 * * * * *`), or a macro: @yearly, @monthly, @weekly, @daily, @hourly";

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

fn cron_error(message: String) -> ScheduleError {
    ScheduleError::new(ScheduleField::Cron, message)
}

/// Reads a cron expression of 5 or 6 fields or a macro; the error names
/// the field that does not parse.
pub fn parse_cron(text: &str) -> Result<Cron, ScheduleError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(cron_error(format!(
            "the cron expression is empty; {CRON_FORM}"
        )));
    }
    if text.len() > MAX_CRON_BYTES {
        return Err(cron_error(format!(
            "the cron expression is {} bytes long; the most is {MAX_CRON_BYTES}",
            text.len()
        )));
    }
    if text.starts_with('@') {
        let Some((_, fields)) = MACROS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
        else {
            let names: Vec<&str> = MACROS.iter().map(|(name, _)| *name).collect();
            return Err(cron_error(format!(
                "the cron expression `{text}` is no macro this engine knows; the macros are {}",
                names.join(", ")
            )));
        };
        return parser()
            .parse(fields)
            .map_err(|e| cron_error(format!("the macro `{text}` cannot be read: {e}")));
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    let fields: &[Field] = match parts.len() {
        5 => &FIVE,
        6 => &SIX,
        7 => {
            return Err(cron_error(format!(
                "the cron expression `{text}` has 7 fields, the last a year, which is not supported; {CRON_FORM}"
            )))
        }
        count => {
            return Err(cron_error(format!(
                "the cron expression `{text}` has {count} field{}; {CRON_FORM}",
                if count == 1 { "" } else { "s" }
            )))
        }
    };
    match parser().parse(text) {
        Ok(cron) => Ok(cron),
        Err(error) => Err(cron_error(explain(text, &parts, fields, &error))),
    }
}

/// Which field of `parts` makes the expression fail, and why: each field
/// is tried alone, every other one a `*`.
fn explain(
    text: &str,
    parts: &[&str],
    fields: &[Field],
    error: &croner::errors::CronError,
) -> String {
    for (index, (part, field)) in parts.iter().zip(fields).enumerate() {
        let mut probe: Vec<&str> = vec!["*"; parts.len()];
        probe[index] = part;
        if parser().parse(&probe.join(" ")).is_err() {
            let why = field_fault(part, *field);
            return format!(
                "the cron expression `{text}` has a bad {} field (field {} of {}): {why}; {}",
                field.name(),
                index + 1,
                parts.len(),
                field.syntax()
            );
        }
    }
    format!("the cron expression `{text}` cannot be read ({error}); {CRON_FORM}")
}

/// What is wrong in one field, as far as a quick look can tell: a number
/// out of range, or a word that names nothing.
fn field_fault(part: &str, field: Field) -> String {
    let (low, high) = field.range();
    let upper = part.to_ascii_uppercase();
    // The item at fault, or the field and the item in it.
    let subject = |item: &str| {
        if item == upper {
            format!("`{part}` is")
        } else {
            format!("`{part}` has `{item}`,")
        }
    };
    for item in upper.split([',', '-', '/', '#']) {
        let item = item.trim_end_matches(['L', 'W']);
        if item.is_empty() || item == "*" || item == "?" {
            continue;
        }
        if let Ok(number) = item.parse::<u64>() {
            if number < u64::from(low) || number > u64::from(high) {
                return format!("{} out of the range {low} to {high}", subject(item));
            }
            continue;
        }
        let known = match field {
            Field::Month => MONTHS.contains(&item),
            Field::DayOfWeek => DAYS.contains(&item),
            _ => false,
        };
        if !known {
            return format!("{} not a {}", subject(item), field.name());
        }
    }
    format!("`{part}` cannot be read")
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Reads an IANA time zone, in any case; the error suggests the closest
/// name when there is one.
pub fn parse_timezone(text: &str) -> Result<Tz, ScheduleError> {
    let text = text.trim();
    const FORM: &str =
        "give an IANA time zone such as `Europe/Lisbon`, `America/New_York` or `UTC` (the default)";
    if text.is_empty() {
        return Err(ScheduleError::new(
            ScheduleField::Timezone,
            format!("the time zone is empty; {FORM}"),
        ));
    }
    if let Ok(zone) = text.parse::<Tz>() {
        return Ok(zone);
    }
    if let Some(zone) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|zone| zone.name().eq_ignore_ascii_case(text))
    {
        return Ok(*zone);
    }
    let lower = text.to_ascii_lowercase();
    let closest = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|zone| {
            let distance = strsim::levenshtein(&lower, &zone.name().to_ascii_lowercase());
            (distance, zone.name())
        })
        .min()
        .filter(|(distance, _)| *distance <= 3);
    let shown: String = text.chars().take(64).collect();
    let hint = match closest {
        Some((_, name)) => format!("did you mean `{name}`? "),
        None => String::new(),
    };
    Err(ScheduleError::new(
        ScheduleField::Timezone,
        format!("there is no time zone `{shown}`; {hint}{FORM}"),
    ))
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instant written in RFC 3339.
    fn at(text: &str) -> Timestamp {
        let time = humantime::parse_rfc3339(text).expect("an RFC 3339 time");
        Timestamp(time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
    }

    fn next(cron: &str, zone: &str, after: &str) -> String {
        let cadence = Cadence::new(cron, zone).expect("a valid cadence");
        tick_text(cadence.next_after(at(after)).expect("a next tick"))
    }

    fn cron_message(cron: &str) -> String {
        let error = parse_cron(cron).expect_err(cron);
        assert_eq!(error.field, ScheduleField::Cron);
        error.message
    }

    #[test]
    fn five_fields_six_with_seconds_and_macros_are_read() {
        assert_eq!(
            next("0 2 * * *", "", "2026-03-10T10:00:00Z"),
            "2026-03-11T02:00:00Z"
        );
        assert_eq!(
            next("*/10 * * * * *", "UTC", "2026-03-10T10:00:01.500Z"),
            "2026-03-10T10:00:10Z"
        );
        assert_eq!(
            next("*/1 * * * * *", "UTC", "2026-03-10T10:00:01.999Z"),
            "2026-03-10T10:00:02Z",
            "strictly after, to the second"
        );
        assert_eq!(
            next("@hourly", "UTC", "2026-03-10T10:00:00Z"),
            "2026-03-10T11:00:00Z"
        );
        assert_eq!(
            next("@DAILY", "UTC", "2026-03-10T10:00:00Z"),
            "2026-03-11T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "UTC", "2026-03-10T10:00:00Z"),
            "2026-03-15T00:00:00Z",
            "Sunday"
        );
        assert_eq!(
            next("@monthly", "UTC", "2026-03-10T10:00:00Z"),
            "2026-04-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "UTC", "2026-03-10T10:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("30 9 * * MON-FRI", "UTC", "2026-03-13T10:00:00Z"),
            "2026-03-16T09:30:00Z",
            "Friday after 09:30: Monday"
        );
    }

    #[test]
    fn ticks_follow_the_time_zone() {
        // Lisbon is UTC+0 in winter, UTC+1 in summer.
        assert_eq!(
            next("0 2 * * *", "Europe/Lisbon", "2026-01-10T12:00:00Z"),
            "2026-01-11T02:00:00Z"
        );
        assert_eq!(
            next("0 2 * * *", "Europe/Lisbon", "2026-07-10T12:00:00Z"),
            "2026-07-11T01:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "America/New_York", "2026-01-10T00:00:00Z"),
            "2026-01-10T14:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "asia/KOLKATA", "2026-01-10T00:00:00Z"),
            "2026-01-10T03:30:00Z",
            "any case; half an hour off UTC"
        );
    }

    #[test]
    fn changes_of_the_clocks_neither_lose_nor_double_a_daily_tick() {
        // New York springs forward on 2026-03-08 at 02:00 (to 03:00) and
        // falls back on 2026-11-01 at 02:00 (to 01:00).
        let cadence = Cadence::new("30 2 * * *", "America/New_York").unwrap();
        let spring: Vec<String> = ticks(&cadence, at("2026-03-07T00:00:00Z"), 3);
        assert_eq!(
            spring,
            [
                "2026-03-07T07:30:00Z",
                // 02:30 does not exist: the first instant after the gap.
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
        let cadence = Cadence::new("30 1 * * *", "America/New_York").unwrap();
        let fall = ticks(&cadence, at("2026-10-31T00:00:00Z"), 3);
        assert_eq!(
            fall,
            [
                "2026-10-31T05:30:00Z",
                // 01:30 comes twice: once.
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
        // An hourly interval keeps one tick per real hour across both.
        let cadence = Cadence::new("0 * * * *", "America/New_York").unwrap();
        let hours = ticks(&cadence, at("2026-11-01T04:30:00Z"), 4);
        assert_eq!(
            hours,
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T07:00:00Z",
                "2026-11-01T08:00:00Z"
            ]
        );
    }

    fn ticks(cadence: &Cadence, from: Timestamp, count: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut now = from;
        for _ in 0..count {
            now = cadence.next_after(now).unwrap();
            out.push(tick_text(now));
        }
        out
    }

    #[test]
    fn a_bad_field_is_named_with_its_range() {
        let message = cron_message("61 * * * *");
        assert!(
            message.contains("bad minute field (field 1 of 5): `61` is out of the range 0 to 59"),
            "{message}"
        );
        let message = cron_message("0 0 25 * * *");
        assert!(
            message.contains("bad hour field (field 3 of 6): `25`"),
            "{message}"
        );
        let message = cron_message("0 0 * FOO *");
        assert!(
            message.contains("bad month field (field 4 of 5): `FOO` is not a month"),
            "{message}"
        );
        assert!(message.contains("JAN to DEC"), "{message}");
        let message = cron_message("0 0 * * MON-FUN");
        assert!(
            message.contains(
                "bad day-of-week field (field 5 of 5): `MON-FUN` has `FUN`, not a day-of-week"
            ),
            "{message}"
        );
        let message = cron_message("0 1-61 * * * *");
        assert!(
            message.contains("bad minute field (field 2 of 6): `1-61` has `61`, out of the range"),
            "{message}"
        );
        let message = cron_message("0 0 32 * *");
        assert!(message.contains("bad day-of-month field"), "{message}");
        let message = cron_message("*/0 * * * *");
        assert!(message.contains("bad minute field"), "{message}");
        let message = cron_message("0 0 * *");
        assert!(
            message.contains("has 4 fields; write 5 fields"),
            "{message}"
        );
        let message = cron_message("0 0 0 * * * 2030");
        assert!(message.contains("7 fields"), "{message}");
        let message = cron_message("@fortnightly");
        assert!(message.contains("@daily"), "{message}");
        assert!(cron_message("   ").contains("is empty"));
        assert!(cron_message(&"1,".repeat(200)).contains("the most is 256"));
    }

    #[test]
    fn a_time_zone_that_does_not_exist_is_refused_with_the_closest() {
        let error = parse_timezone("Europe/Lisbonn").unwrap_err();
        assert_eq!(error.field, ScheduleField::Timezone);
        assert!(
            error
                .message
                .contains("no time zone `Europe/Lisbonn`; did you mean `Europe/Lisbon`?"),
            "{}",
            error.message
        );
        let error = parse_timezone("Mars/Olympus_Mons").unwrap_err();
        assert!(!error.message.contains("did you mean"), "{}", error.message);
        assert!(error.message.contains("IANA"), "{}", error.message);
        assert_eq!(parse_timezone(" utc ").unwrap(), Tz::UTC);
    }

    #[test]
    fn specs_are_checked_and_the_zone_written_canonically() {
        let spec = |name: &str, cron: &str, zone: &str| ScheduleSpec {
            name: name.into(),
            workflow: "report".into(),
            cron: cron.into(),
            timezone: zone.into(),
            data: Map::new(),
            overlap: Overlap::Skip,
            catch_up: CatchUp::Skip,
        };
        let now = at("2026-03-10T10:00:00Z");
        let (checked, _) = spec("nightly", " 0 2 * * * ", "europe/lisbon")
            .check(now)
            .unwrap();
        assert_eq!(checked.timezone, "Europe/Lisbon");
        assert_eq!(checked.cron, "0 2 * * *");
        let error = spec("", "@daily", "UTC").check(now).unwrap_err();
        assert_eq!(error.field, ScheduleField::Name);
        let error = spec("a b", "@daily", "UTC").check(now).unwrap_err();
        assert_eq!(error.field, ScheduleField::Name);
        let error = spec("feb", "0 0 30 2 *", "UTC").check(now).unwrap_err();
        assert_eq!(error.field, ScheduleField::Cron);
        assert!(error.message.contains("never matches"), "{}", error.message);
    }

    #[test]
    fn ticks_on_time_fire_and_missed_ones_follow_the_catch_up_policy() {
        let every_second = Cadence::new("*/1 * * * * *", "UTC").unwrap();
        let tick = at("2026-03-10T10:00:00Z");
        assert_eq!(
            decide(
                &every_second,
                tick,
                at("2026-03-10T09:59:59.900Z"),
                CatchUp::Skip
            ),
            None,
            "not due yet"
        );
        // Late by less than the grace (5 s at least): each tick fires.
        assert_eq!(
            decide(
                &every_second,
                tick,
                at("2026-03-10T10:00:03Z"),
                CatchUp::Skip
            ),
            Some(Due::Fire {
                next: Some(at("2026-03-10T10:00:01Z")),
                caught_up: false
            })
        );
        // Later: missed. Skip drops up to now; one fires once for all.
        let now = at("2026-03-10T10:00:30.250Z");
        assert_eq!(
            decide(&every_second, tick, now, CatchUp::Skip),
            Some(Due::Drop {
                next: Some(at("2026-03-10T10:00:31Z"))
            })
        );
        assert_eq!(
            decide(&every_second, tick, now, CatchUp::One),
            Some(Due::Fire {
                next: Some(at("2026-03-10T10:00:31Z")),
                caught_up: true
            })
        );
        // A daily tick has a minute of grace.
        let daily = Cadence::new("0 2 * * *", "UTC").unwrap();
        let tick = at("2026-03-10T02:00:00Z");
        assert_eq!(daily.grace(tick), MAX_GRACE);
        assert!(matches!(
            decide(&daily, tick, at("2026-03-10T02:00:59Z"), CatchUp::Skip),
            Some(Due::Fire {
                caught_up: false,
                ..
            })
        ));
        assert_eq!(
            decide(&daily, tick, at("2026-03-10T02:01:01Z"), CatchUp::Skip),
            Some(Due::Drop {
                next: Some(at("2026-03-11T02:00:00Z"))
            })
        );
    }

    #[test]
    fn a_ticks_key_names_the_schedule_and_the_second() {
        assert_eq!(
            tick_key("nightly", at("2026-03-10T02:00:00.999Z")),
            "schedule:nightly:2026-03-10T02:00:00Z"
        );
    }

    #[test]
    fn policies_read_and_write_their_words() {
        for policy in Overlap::ALL {
            assert_eq!(Overlap::parse(policy.as_str()), Some(policy));
        }
        for policy in CatchUp::ALL {
            assert_eq!(CatchUp::parse(policy.as_str()), Some(policy));
        }
        assert_eq!(Overlap::default(), Overlap::Skip);
        assert_eq!(CatchUp::default(), CatchUp::Skip);
        assert_eq!(CatchUp::parse("all"), None);
    }
}
