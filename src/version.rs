//! Handler versions and RubyGems-style version requirements.
//!
//! The seed names handler versions the RubyGems way (`~> 1.2`), which differs
//! from Cargo's semver requirements (`~> 1.2` allows 1.9; Cargo's `~1.2` does
//! not). Versions themselves are plain semver, with missing minor or patch
//! parts read as zero.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The forms a requirement may take, quoted in every requirement error so the
/// reader sees how to fix it without looking anything up.
const REQUIREMENT_FORMS: &str = "expected forms like `~> 1.2`, `>= 1.0, < 2`, or `1.2.3`";

/// The forms a version may take, quoted in every version error.
const VERSION_FORMS: &str = "expected forms like `1`, `1.2`, `1.2.3` or `1.2.3-beta.1`";

/// Why a version or a requirement could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("`{input}` is not a version: {reason}; {VERSION_FORMS}")]
    InvalidVersion { input: String, reason: String },
    #[error(
        "the version requirement is empty: write one like `~> 1.2`, `>= 1.0, < 2` or `1.2.3`, \
         or leave the version out to take the highest one on offer"
    )]
    EmptyRequirement,
    #[error(
        "`{input}` has an empty item in its comma-separated list: \
         remove the extra comma, or put a constraint such as `< 2` there"
    )]
    EmptyConstraint { input: String },
    #[error(
        "`{input}` is not a version requirement: \
         `{operator}` needs a version after it, as in `{operator} 1.2`"
    )]
    MissingVersion { input: String, operator: String },
    #[error("`{input}` is not a version requirement: {reason}; {REQUIREMENT_FORMS}")]
    InvalidRequirement { input: String, reason: String },
}

/// A handler version: semver, but written as loosely as RubyGems allows
/// (`1` and `1.2` stand for `1.0.0` and `1.2.0`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub semver::Version);

/// `0.0.0`: the version of a handler configured without one.
impl Default for Version {
    fn default() -> Self {
        Version::new(0, 0, 0)
    }
}

impl Version {
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self(semver::Version::new(major, minor, patch))
    }

    pub fn parse(text: &str) -> Result<Self, VersionError> {
        parse_version(text).map(|(version, _)| version)
    }

    /// The version without its pre-release and build parts.
    fn release(&self) -> semver::Version {
        semver::Version::new(self.0.major, self.0.minor, self.0.patch)
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads a version and also reports how many numeric parts it was written
/// with, because `~> 1.2` and `~> 1.2.0` mean different things.
fn parse_version(text: &str) -> Result<(Version, usize), VersionError> {
    let invalid = |reason: &str| VersionError::InvalidVersion {
        input: text.to_owned(),
        reason: reason.to_owned(),
    };
    let text_trimmed = text.trim();
    if text_trimmed.is_empty() {
        return Err(invalid("there is no version"));
    }
    let (core, build) = match text_trimmed.split_once('+') {
        Some((core, build)) => (core, Some(build)),
        None => (text_trimmed, None),
    };
    let (numbers, pre) = match core.split_once('-') {
        Some((numbers, pre)) => (numbers, Some(pre)),
        None => (core, None),
    };
    let mut parts = Vec::with_capacity(3);
    for part in numbers.split('.') {
        if part.is_empty() {
            return Err(invalid("a numeric part is missing"));
        }
        if !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid(&format!("`{part}` is not a whole number")));
        }
        let number = part
            .parse::<u64>()
            .map_err(|_| invalid(&format!("`{part}` is too large")))?;
        parts.push(number);
    }
    if parts.len() > 3 {
        return Err(invalid("a version has at most three numeric parts"));
    }
    let mut version = semver::Version::new(
        parts[0],
        parts.get(1).copied().unwrap_or(0),
        parts.get(2).copied().unwrap_or(0),
    );
    if pre.is_some_and(str::is_empty) {
        return Err(invalid("the pre-release tag after `-` is empty"));
    }
    if build.is_some_and(str::is_empty) {
        return Err(invalid("the build metadata after `+` is empty"));
    }
    if let Some(pre) = pre {
        version.pre = semver::Prerelease::new(pre)
            .map_err(|_| invalid(&format!("`{pre}` is not a valid pre-release tag")))?;
    }
    if let Some(build) = build {
        version.build = semver::BuildMetadata::new(build)
            .map_err(|_| invalid(&format!("`{build}` is not valid build metadata")))?;
    }
    Ok((Version(version), parts.len()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Operator {
    Pessimistic,
    GreaterOrEqual,
    Greater,
    LessOrEqual,
    Less,
    Equal,
    NotEqual,
}

impl Operator {
    /// Longer spellings come first so that `>=` is not read as `>` then `=`.
    const ALL: [(&'static str, Operator); 7] = [
        ("~>", Operator::Pessimistic),
        (">=", Operator::GreaterOrEqual),
        ("<=", Operator::LessOrEqual),
        ("!=", Operator::NotEqual),
        (">", Operator::Greater),
        ("<", Operator::Less),
        ("=", Operator::Equal),
    ];

    fn symbol(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, operator)| *operator == self)
            .map_or("=", |(symbol, _)| symbol)
    }
}

/// One `operator version` item of a requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Constraint {
    operator: Operator,
    version: Version,
    /// How many numeric parts were written: `~>` bumps a different part
    /// depending on it, and Display writes the version back the same way.
    precision: usize,
}

impl Constraint {
    fn parse(item: &str, whole: &str) -> Result<Self, VersionError> {
        let (operator, rest) = Operator::ALL
            .iter()
            .find_map(|(symbol, operator)| {
                item.strip_prefix(symbol)
                    .map(|rest| (*operator, rest.trim_start()))
            })
            // A bare version is RubyGems' shorthand for `= version`.
            .unwrap_or((Operator::Equal, item));
        if rest.is_empty() {
            return Err(VersionError::MissingVersion {
                input: whole.to_owned(),
                operator: operator.symbol().to_owned(),
            });
        }
        let (version, precision) =
            parse_version(rest).map_err(|error| VersionError::InvalidRequirement {
                input: whole.to_owned(),
                reason: match error {
                    VersionError::InvalidVersion { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
        Ok(Self {
            operator,
            version,
            precision,
        })
    }

    fn matches(&self, candidate: &Version) -> bool {
        let ordering = candidate.cmp(&self.version);
        match self.operator {
            Operator::Equal => ordering == Ordering::Equal,
            Operator::NotEqual => ordering != Ordering::Equal,
            Operator::Greater => ordering == Ordering::Greater,
            Operator::GreaterOrEqual => ordering != Ordering::Less,
            Operator::Less => ordering == Ordering::Less,
            Operator::LessOrEqual => ordering != Ordering::Greater,
            Operator::Pessimistic => {
                // RubyGems compares the upper bound against the release part
                // only, so `~> 1.2` does not admit `2.0.0-alpha`.
                ordering != Ordering::Less
                    && self
                        .upper_bound()
                        .is_none_or(|bound| candidate.release() < bound)
            }
        }
    }

    /// The exclusive upper bound of `~>`: drop the last written part and bump
    /// the one before it (`~> 1.2.3` → `1.3`, `~> 1.2` → `2`; `~> 1` → `2`,
    /// as RubyGems treats a single part like two).
    fn upper_bound(&self) -> Option<semver::Version> {
        let version = &self.version.0;
        if self.precision >= 3 {
            let minor = version.minor.checked_add(1)?;
            Some(semver::Version::new(version.major, minor, 0))
        } else {
            let major = version.major.checked_add(1)?;
            Some(semver::Version::new(major, 0, 0))
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = &self.version.0;
        write!(f, "{} {}", self.operator.symbol(), version.major)?;
        if self.precision >= 2 {
            write!(f, ".{}", version.minor)?;
        }
        if self.precision >= 3 {
            write!(f, ".{}", version.patch)?;
        }
        if !version.pre.is_empty() {
            write!(f, "-{}", version.pre)?;
        }
        if !version.build.is_empty() {
            write!(f, "+{}", version.build)?;
        }
        Ok(())
    }
}

/// A RubyGems version requirement: a comma-separated list of constraints that
/// must all hold, such as `~> 1.2` or `>= 1.0, < 2.0`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    constraints: Vec<Constraint>,
}

impl Requirement {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let whole = text.trim();
        if whole.is_empty() {
            return Err(VersionError::EmptyRequirement);
        }
        let constraints = whole
            .split(',')
            .map(|item| {
                let item = item.trim();
                if item.is_empty() {
                    Err(VersionError::EmptyConstraint {
                        input: whole.to_owned(),
                    })
                } else {
                    Constraint::parse(item, whole)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { constraints })
    }

    pub fn matches(&self, version: &Version) -> bool {
        self.constraints
            .iter()
            .all(|constraint| constraint.matches(version))
    }

    /// The highest of the `offered` versions that satisfies the requirement.
    pub fn best<'a>(&self, offered: impl IntoIterator<Item = &'a Version>) -> Option<&'a Version> {
        offered
            .into_iter()
            .filter(|version| self.matches(version))
            .max()
    }
}

impl FromStr for Requirement {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, constraint) in self.constraints.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            constraint.fmt(f)?;
        }
        Ok(())
    }
}

impl Serialize for Requirement {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Requirement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn req(text: &str) -> Requirement {
        Requirement::parse(text).unwrap()
    }

    fn admits(requirement: &str, version: &str) -> bool {
        req(requirement).matches(&v(version))
    }

    #[test]
    fn short_versions_fill_missing_parts_with_zero() {
        assert_eq!(v("1"), Version::new(1, 0, 0));
        assert_eq!(v("1.2"), Version::new(1, 2, 0));
        assert_eq!(v("1.2.3"), Version::new(1, 2, 3));
        assert_eq!(v("1").to_string(), "1.0.0");
        assert_eq!(v(" 1.2 ").to_string(), "1.2.0");
    }

    #[test]
    fn versions_keep_pre_release_tags_and_order_below_the_release() {
        let beta = v("1.2-beta.1");
        assert_eq!(beta.to_string(), "1.2.0-beta.1");
        assert!(beta < v("1.2.0"));
        assert!(v("1.10") > v("1.9"));
        assert_eq!(v("2.0.0+build.5").to_string(), "2.0.0+build.5");
    }

    #[test]
    fn bad_versions_are_rejected() {
        for bad in ["", "x", "1.", ".1", "1.2.3.4", "1.-2", "v1", "1.2-", "1..2"] {
            let error = Version::parse(bad).unwrap_err();
            assert!(
                matches!(error, VersionError::InvalidVersion { .. }),
                "{bad}: {error:?}"
            );
        }
        let message = Version::parse("1.x").unwrap_err().to_string();
        assert!(message.contains("`x` is not a whole number"), "{message}");
        assert!(message.contains("`1.2.3`"), "{message}");
    }

    #[test]
    fn versions_serialize_as_strings() {
        let json = serde_json::to_string(&v("1.2")).unwrap();
        assert_eq!(json, "\"1.2.0\"");
        let back: Version = serde_json::from_str("\"3\"").unwrap();
        assert_eq!(back, Version::new(3, 0, 0));
        assert!(serde_json::from_str::<Version>("\"nope\"").is_err());
    }

    #[test]
    fn pessimistic_with_two_parts_allows_minor_upgrades() {
        assert!(admits("~> 1.2", "1.2.0"));
        assert!(admits("~> 1.2", "1.2.9"));
        assert!(admits("~> 1.2", "1.9.0"));
        assert!(!admits("~> 1.2", "1.1.9"));
        assert!(!admits("~> 1.2", "2.0.0"));
        assert!(!admits("~> 1.2", "2.0.0-alpha"));
    }

    #[test]
    fn pessimistic_with_three_parts_allows_patch_upgrades() {
        assert!(admits("~> 1.2.3", "1.2.3"));
        assert!(admits("~> 1.2.3", "1.2.10"));
        assert!(!admits("~> 1.2.3", "1.2.2"));
        assert!(!admits("~> 1.2.3", "1.3.0"));
        assert!(!admits("~> 1.2.0", "1.3.0"));
    }

    #[test]
    fn pessimistic_with_one_part_allows_up_to_the_next_major() {
        assert!(admits("~> 1", "1.0.0"));
        assert!(admits("~> 1", "1.99.0"));
        assert!(!admits("~> 1", "0.9.0"));
        assert!(!admits("~> 1", "2.0.0"));
    }

    #[test]
    fn pessimistic_at_the_top_of_the_range_has_no_upper_bound() {
        let top = format!("~> {}", u64::MAX);
        assert!(admits(&top, &format!("{}.5.0", u64::MAX)));
    }

    #[test]
    fn a_bare_version_means_exactly_that_version() {
        assert!(admits("1.0.0", "1.0.0"));
        assert!(!admits("1.0.0", "1.0.1"));
        assert!(admits("1.2", "1.2.0"));
        assert_eq!(req("1.0.0"), req("= 1.0.0"));
    }

    #[test]
    fn each_comparison_operator_compares() {
        assert!(admits(">= 1.2", "1.2.0"));
        assert!(admits(">= 1.2", "3.0.0"));
        assert!(!admits(">= 1.2", "1.1.0"));
        assert!(admits("> 1.2", "1.2.1"));
        assert!(!admits("> 1.2", "1.2.0"));
        assert!(admits("< 2", "1.9.9"));
        assert!(!admits("< 2", "2.0.0"));
        assert!(admits("<= 2", "2.0.0"));
        assert!(!admits("<= 2", "2.0.1"));
        assert!(admits("= 1.4", "1.4.0"));
        assert!(!admits("= 1.4", "1.4.1"));
        assert!(admits("!= 1.4", "1.4.1"));
        assert!(!admits("!= 1.4", "1.4.0"));
    }

    #[test]
    fn every_constraint_of_a_list_must_hold() {
        let range = req(">= 1.0, < 2.0, != 1.5.0");
        assert!(range.matches(&v("1.0.0")));
        assert!(range.matches(&v("1.9.9")));
        assert!(!range.matches(&v("1.5.0")));
        assert!(!range.matches(&v("2.0.0")));
        assert!(!range.matches(&v("0.9.0")));
    }

    #[test]
    fn whitespace_around_operators_and_commas_is_optional() {
        assert_eq!(req("~>1.2"), req("~> 1.2"));
        assert_eq!(req("  >=1.0,<2.0 "), req(">= 1.0, < 2.0"));
        assert!(admits("~>1.2", "1.5.0"));
    }

    #[test]
    fn display_writes_the_canonical_form() {
        assert_eq!(req("~>1.2").to_string(), "~> 1.2");
        assert_eq!(req("~> 1.2.3").to_string(), "~> 1.2.3");
        assert_eq!(req(">=1.0,<2.0").to_string(), ">= 1.0, < 2.0");
        assert_eq!(req("1.0.0").to_string(), "= 1.0.0");
        assert_eq!(req("!= 2-rc.1").to_string(), "!= 2-rc.1");
        for text in ["~> 1", "> 0.1, <= 0.9.9", "~> 1.2.3-beta"] {
            assert_eq!(req(&req(text).to_string()), req(text), "{text}");
        }
    }

    #[test]
    fn requirements_serialize_as_strings() {
        let json = serde_json::to_string(&req("~>1.2")).unwrap();
        assert_eq!(json, "\"~> 1.2\"");
        let back: Requirement = serde_json::from_str("\">= 1, < 2\"").unwrap();
        assert_eq!(back, req(">= 1, < 2"));
        assert!(serde_json::from_str::<Requirement>("\"~>\"").is_err());
    }

    #[test]
    fn an_empty_requirement_is_rejected() {
        assert_eq!(Requirement::parse(""), Err(VersionError::EmptyRequirement));
        assert_eq!(
            Requirement::parse("   "),
            Err(VersionError::EmptyRequirement)
        );
    }

    #[test]
    fn an_empty_list_item_is_rejected() {
        for bad in [">= 1,", ", < 2", ">= 1,, < 2"] {
            assert!(
                matches!(
                    Requirement::parse(bad),
                    Err(VersionError::EmptyConstraint { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_operator_without_a_version_is_rejected() {
        let error = Requirement::parse("~>").unwrap_err();
        assert_eq!(
            error,
            VersionError::MissingVersion {
                input: "~>".into(),
                operator: "~>".into()
            }
        );
        assert!(error.to_string().contains("as in `~> 1.2`"));
        assert!(matches!(
            Requirement::parse(">= 1, <"),
            Err(VersionError::MissingVersion { .. })
        ));
    }

    #[test]
    fn garbage_is_rejected_with_the_accepted_forms() {
        for bad in ["~> x", "abc", "=> 1.0", "~~> 1", ">= 1.0 < 2.0", "1.2.3.4"] {
            let error = Requirement::parse(bad).unwrap_err();
            assert!(
                matches!(error, VersionError::InvalidRequirement { .. }),
                "{bad}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("`{bad}` is not a version requirement")),
                "{message}"
            );
            assert!(message.contains("`~> 1.2`, `>= 1.0, < 2`, or `1.2.3`"));
        }
    }

    #[test]
    fn best_picks_the_highest_matching_version() {
        let offered = [v("1.1.0"), v("1.4.2"), v("2.0.0"), v("1.4.10"), v("0.9.0")];
        assert_eq!(req("~> 1.2").best(&offered), Some(&v("1.4.10")));
        assert_eq!(req("~> 1.4.2").best(&offered), Some(&v("1.4.10")));
        assert_eq!(req(">= 1.0, < 1.4").best(&offered), Some(&v("1.1.0")));
        assert_eq!(req("1.4.2").best(&offered), Some(&v("1.4.2")));
        assert_eq!(req("~> 3").best(&offered), None);
        assert_eq!(req(">= 0").best(std::iter::empty()), None);
    }
}
