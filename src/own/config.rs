//! `[own_numbers]`: which of the operator's own numbers are watched, how
//! often, and by which providers.

use serde::{Deserialize, Serialize};

use crate::number::{E164_MAX_DIGITS, E164_MIN_DIGITS};
use crate::reputation::providers::didchecks::{RoutineSettings, Schedule};

use super::Provider;

/// The most own numbers one configuration may name (after ranges are
/// expanded): each is a metric series per provider and a request per check.
pub const MAX_OWN_NUMBERS: usize = 100_000;

/// The length of every North American (+1) number, in digits: what a `*`
/// range of +1 numbers expands to.
const NANP_DIGITS: usize = 11;

/// One entry of `own_numbers.numbers`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NumberEntry {
    /// `"+15559876543"`, or `"+1555123*"`: every +1 number under the prefix.
    Text(String),
    /// `{prefix = "+1555123", count = 100}`: `count` numbers from the
    /// prefix padded with zeros (+15551230000 … +15551230099). `digits` is
    /// the numbers' full length (11 for +1, required for other countries).
    Range {
        prefix: String,
        count: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digits: Option<u8>,
    },
}

/// How DIDChecks routines run (`own_numbers.routine_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoutineSchedule {
    Interval,
    Weekly,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OwnNumbersConfig {
    /// The numbers: exact, `"+1555123*"`, or `{prefix, count[, digits]}`.
    pub numbers: Vec<NumberEntry>,
    /// How often `serve` checks each number with the Hiya status provider.
    pub check_every_hours: f64,
    /// Which providers watch them: `hiya_status` (checked by `serve`),
    /// `didchecks` (the provider's routines, reporting by webhook).
    pub providers: Vec<Provider>,
    /// The most Hiya status requests per second a round of checks makes.
    pub requests_per_second: f64,
    /// DIDChecks routines: `interval` (every `routine_interval_days`) or
    /// `weekly` (on `routine_weekly_days`, 0 = Sunday).
    pub routine_schedule: RoutineSchedule,
    pub routine_interval_days: u32,
    pub routine_weekly_days: Vec<u8>,
    /// Whether DIDChecks reports a routine's result only when the number is
    /// spam. Off, every check arrives and is kept as a result.
    pub routine_notify_only_if_spam: bool,
}

impl Default for OwnNumbersConfig {
    fn default() -> Self {
        OwnNumbersConfig {
            numbers: Vec::new(),
            check_every_hours: 24.0,
            providers: vec![Provider::HiyaStatus],
            requests_per_second: 1.0,
            routine_schedule: RoutineSchedule::Interval,
            routine_interval_days: 1,
            routine_weekly_days: Vec::new(),
            routine_notify_only_if_spam: false,
        }
    }
}

/// Why `[own_numbers]` is refused; each message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OwnConfigError {
    #[error(
        "own_numbers.numbers: {entry:?} is not an E.164 number, a \"+1555123*\" range or {{prefix, count}}: {why}"
    )]
    Number { entry: String, why: String },
    #[error(
        "own_numbers.numbers: {count} numbers after expanding the ranges; at most {MAX_OWN_NUMBERS}"
    )]
    TooMany { count: usize },
    #[error("own_numbers.{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl OwnNumbersConfig {
    /// Whether `provider` watches the numbers.
    pub fn watches(&self, provider: Provider) -> bool {
        !self.numbers.is_empty() && self.providers.contains(&provider)
    }

    /// Every own number, sorted and without repeats.
    pub fn expand(&self) -> Result<Vec<String>, OwnConfigError> {
        let mut out = Vec::new();
        for entry in &self.numbers {
            expand_entry(entry, &mut out)?;
            if out.len() > MAX_OWN_NUMBERS {
                // Repeats (a block inside a range) do not count.
                out.sort_unstable();
                out.dedup();
                if out.len() > MAX_OWN_NUMBERS {
                    return Err(OwnConfigError::TooMany { count: out.len() });
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The whole section checked: the numbers, the schedule and the
    /// routine settings.
    pub fn validate(&self) -> Result<(), OwnConfigError> {
        self.expand()?;
        let invalid = |key, message: &str| {
            Err(OwnConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if !(self.check_every_hours > 0.0 && self.check_every_hours <= 24.0 * 366.0) {
            return invalid(
                "check_every_hours",
                "give a number of hours above 0 and at most a year (8784)",
            );
        }
        if !(self.requests_per_second > 0.0 && self.requests_per_second <= 1000.0) {
            return invalid(
                "requests_per_second",
                "give a rate above 0 and at most 1000",
            );
        }
        if self.routine_schedule == RoutineSchedule::Interval
            && !(1..=365).contains(&self.routine_interval_days)
        {
            return invalid("routine_interval_days", "give 1 to 365 days");
        }
        if self.routine_schedule == RoutineSchedule::Weekly
            && (self.routine_weekly_days.is_empty()
                || self.routine_weekly_days.iter().any(|d| *d > 6))
        {
            return invalid(
                "routine_weekly_days",
                "give the weekdays as 0 (Sunday) to 6 (Saturday), e.g. [1, 4]",
            );
        }
        Ok(())
    }

    /// What each DIDChecks routine should be: this schedule, reporting by
    /// webhook.
    pub fn routine_settings(&self) -> RoutineSettings {
        let schedule = match self.routine_schedule {
            RoutineSchedule::Interval => Schedule::Interval {
                days: self.routine_interval_days,
            },
            RoutineSchedule::Weekly => {
                let mut days = self.routine_weekly_days.clone();
                days.sort_unstable();
                days.dedup();
                Schedule::Weekly { days }
            }
        };
        RoutineSettings {
            schedule,
            notify_via: vec!["webhook".to_string()],
            notify_only_if_spam: self.routine_notify_only_if_spam,
        }
    }
}

fn digits_of(prefix: &str) -> Option<&str> {
    let d = prefix.strip_prefix('+')?;
    (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

fn expand_entry(entry: &NumberEntry, out: &mut Vec<String>) -> Result<(), OwnConfigError> {
    let bad = |entry: String, why: &str| OwnConfigError::Number {
        entry,
        why: why.to_string(),
    };
    match entry {
        NumberEntry::Text(t) => {
            let t = t.trim();
            if let Some(prefix) = t.strip_suffix('*') {
                let digits = digits_of(prefix)
                    .ok_or_else(|| bad(t.into(), "a range is + and digits before the *"))?;
                if !digits.starts_with('1') {
                    return Err(bad(
                        t.into(),
                        "only +1 numbers have a known length; write {prefix = \"+44207946\", count = 1000, digits = 12}",
                    ));
                }
                let free = NANP_DIGITS
                    .checked_sub(digits.len())
                    .filter(|f| (1..=4).contains(f))
                    .ok_or_else(|| {
                        bad(
                            t.into(),
                            "a +1 range covers at most 10,000 numbers: give 7 to 10 digits before the *",
                        )
                    })?;
                push_range(prefix, 0, 10u64.pow(free as u32), free, out);
                Ok(())
            } else {
                let digits =
                    digits_of(t).ok_or_else(|| bad(t.into(), "write it as +15559876543"))?;
                if !(E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&digits.len()) {
                    return Err(bad(
                        t.into(),
                        &format!(
                            "E.164 numbers have {E164_MIN_DIGITS} to {E164_MAX_DIGITS} digits"
                        ),
                    ));
                }
                out.push(t.to_string());
                Ok(())
            }
        }
        NumberEntry::Range {
            prefix,
            count,
            digits,
        } => {
            let shown = format!("{{prefix = {prefix:?}, count = {count}}}");
            let p = digits_of(prefix.trim())
                .ok_or_else(|| bad(shown.clone(), "the prefix is + and digits"))?;
            let total = match digits {
                Some(d) => *d as usize,
                None if p.starts_with('1') => NANP_DIGITS,
                None => {
                    return Err(bad(
                        shown,
                        "say how many digits the numbers have, e.g. digits = 12 (only +1 numbers are known to have 11)",
                    ));
                }
            };
            if !(E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&total) || total <= p.len() {
                return Err(bad(
                    shown,
                    "the numbers must be longer than the prefix and have 7 to 15 digits",
                ));
            }
            let free = total - p.len();
            let room = 10u64.checked_pow(free as u32).unwrap_or(u64::MAX);
            if *count == 0 || u64::from(*count) > room {
                return Err(bad(
                    shown,
                    &format!("count must be 1 to {room} for this prefix and length"),
                ));
            }
            if *count as usize > MAX_OWN_NUMBERS {
                return Err(OwnConfigError::TooMany {
                    count: *count as usize,
                });
            }
            push_range(prefix.trim(), 0, u64::from(*count), free, out);
            Ok(())
        }
    }
}

fn push_range(prefix: &str, first: u64, count: u64, width: usize, out: &mut Vec<String>) {
    for i in first..first + count {
        out.push(format!("{prefix}{i:0width$}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_numbers: &str) -> OwnNumbersConfig {
        toml::from_str(&format!("numbers = {toml_numbers}")).unwrap()
    }

    #[test]
    fn exact_numbers_star_ranges_and_prefix_counts_expand_sorted_without_repeats() {
        let c = config(
            r#"["+15559876543", "+1555123*", {prefix = "+1555123", count = 100}, {prefix = "+44207946", count = 3, digits = 12}, "+15559876543"]"#,
        );
        let n = c.expand().unwrap();
        assert_eq!(
            n.len(),
            1 + 10_000 + 3,
            "the 100 of the block are inside the *"
        );
        assert_eq!(n[0], "+15551230000");
        assert!(n.contains(&"+15551239999".to_string()));
        assert!(n.contains(&"+15559876543".to_string()));
        assert_eq!(
            &n[n.len() - 3..],
            ["+442079460000", "+442079460001", "+442079460002"]
        );
        let block = config(r#"[{prefix = "+1555123", count = 100}]"#)
            .expand()
            .unwrap();
        assert_eq!(
            (block[0].as_str(), block[99].as_str()),
            ("+15551230000", "+15551230099")
        );
        c.validate().unwrap();
    }

    #[test]
    fn bad_entries_say_what_to_write_instead() {
        for (entry, hint) in [
            (r#"["5551234567"]"#, "+15559876543"),
            (r#"["+44207*"]"#, "digits = 12"),
            (r#"["+1*"]"#, "at most 10,000"),
            (r#"["+12"]"#, "7 to 15 digits"),
            (r#"[{prefix = "+44207946", count = 3}]"#, "digits = 12"),
            (
                r#"[{prefix = "+1555123", count = 10001}]"#,
                "count must be 1 to 10000",
            ),
            (r#"[{prefix = "+1555123", count = 0}]"#, "count must be"),
        ] {
            let e = config(entry).expand().unwrap_err().to_string();
            assert!(e.contains(hint), "{entry}: {e}");
        }
        let too_many = config(r#"[{prefix = "+1555", count = 100001}]"#)
            .expand()
            .unwrap_err();
        assert!(
            matches!(too_many, OwnConfigError::TooMany { .. }),
            "{too_many}"
        );
    }

    #[test]
    fn schedule_and_routine_settings_are_checked() {
        let mut c = config(r#"["+15559876543"]"#);
        c.check_every_hours = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("check_every_hours")
        );
        c.check_every_hours = 24.0;
        c.routine_schedule = RoutineSchedule::Weekly;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("routine_weekly_days")
        );
        c.routine_weekly_days = vec![4, 1, 4];
        c.validate().unwrap();
        assert_eq!(
            c.routine_settings().schedule,
            Schedule::Weekly { days: vec![1, 4] }
        );
        assert!(c.watches(Provider::HiyaStatus));
        assert!(!c.watches(Provider::DidChecks));
    }
}
