//! `sipsentry own routines sync`: DIDChecks routines made to match
//! `[own_numbers]`, one per own number. The sync lists the account's
//! routines, plans what differs ([`plan`]) and applies exactly that
//! ([`apply`]): bulk creates for missing numbers, an update for a routine
//! whose schedule or notification differs, deletes for routines of numbers
//! that are no longer ours (and for repeats). A second sync plans nothing.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::reputation::SourceError;
use crate::reputation::providers::didchecks::{DidChecks, Routine, RoutineSettings, Schedule};

/// What DIDChecks bills per routine check (USD), for the plan's estimate.
pub const CHECK_PRICE_USD: f64 = 0.35;

/// What a sync would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Own numbers without a routine.
    pub create: Vec<String>,
    /// Routines to bring in line with the settings.
    pub update: Vec<Routine>,
    /// Routines of numbers not in `[own_numbers]`, and second routines of
    /// one number.
    pub delete: Vec<Routine>,
    /// Routines already as configured.
    pub keep: usize,
    #[serde(skip)]
    pub settings: RoutineSettings,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }

    /// Routine checks a week once applied.
    pub fn checks_per_week(&self) -> f64 {
        let per_routine = match &self.settings.schedule {
            Schedule::Interval { days } => 7.0 / f64::from((*days).max(1)),
            Schedule::Weekly { days } => days.len() as f64,
        };
        per_routine * (self.keep + self.update.len() + self.create.len()) as f64
    }

    /// The plan as a person reads it before saying yes.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let schedule = match &self.settings.schedule {
            Schedule::Interval { days } => format!("every {days} day(s)"),
            Schedule::Weekly { days } => format!("weekly on days {days:?} (0 = Sunday)"),
        };
        let _ = writeln!(
            out,
            "DIDChecks routines, {schedule}, reporting by webhook: create {}, update {}, delete {}, unchanged {}",
            self.create.len(),
            self.update.len(),
            self.delete.len(),
            self.keep
        );
        for n in &self.create {
            let _ = writeln!(out, "  create  {n}");
        }
        for r in &self.update {
            let _ = writeln!(
                out,
                "  update  {}  (routine {}: {})",
                r.phone_number,
                r.id,
                current(r)
            );
        }
        for r in &self.delete {
            let _ = writeln!(out, "  delete  {}  (routine {})", r.phone_number, r.id);
        }
        let checks = self.checks_per_week();
        let _ = writeln!(
            out,
            "afterwards: about {checks:.0} routine checks a week, about ${:.2} a week at ${CHECK_PRICE_USD:.2} a check",
            checks * CHECK_PRICE_USD
        );
        out
    }
}

fn current(r: &Routine) -> String {
    let schedule = match r.schedule_type.as_str() {
        "interval" => format!("every {} day(s)", r.interval_days.unwrap_or(0)),
        "weekly" => format!("weekly {:?}", r.weekly_days.clone().unwrap_or_default()),
        other => other.to_string(),
    };
    format!(
        "now {schedule}, notify via {:?}, only if spam {}, active {}",
        r.notify_via,
        r.notify_only_if_spam.unwrap_or(true),
        r.is_active.unwrap_or(true)
    )
}

/// What differs between the own `numbers` and the `listed` routines.
pub fn plan(numbers: &[String], listed: &[Routine], settings: &RoutineSettings) -> Plan {
    let mut by_number: HashMap<&str, Vec<&Routine>> = HashMap::new();
    for r in listed {
        by_number
            .entry(r.phone_number.as_str())
            .or_default()
            .push(r);
    }
    let mut plan = Plan {
        create: Vec::new(),
        update: Vec::new(),
        delete: Vec::new(),
        keep: 0,
        settings: settings.clone(),
    };
    for n in numbers {
        let Some(mut rs) = by_number.remove(n.as_str()) else {
            plan.create.push(n.clone());
            continue;
        };
        // Keep one routine per number, a matching one if there is one.
        let keep = rs.iter().position(|r| settings.matches(r)).unwrap_or(0);
        let kept = rs.remove(keep);
        if settings.matches(kept) {
            plan.keep += 1;
        } else {
            plan.update.push(kept.clone());
        }
        plan.delete.extend(rs.into_iter().cloned());
    }
    let mut gone: Vec<&Routine> = by_number.into_values().flatten().collect();
    gone.sort_by(|a, b| (&a.phone_number, &a.id).cmp(&(&b.phone_number, &b.id)));
    plan.delete.extend(gone.into_iter().cloned());
    plan
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Applied {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// HTTP requests made.
    pub requests: usize,
}

/// Applies `plan`: creates, then updates, then deletes. Stops at the first
/// error, which says how far it got.
pub async fn apply(client: &DidChecks, plan: &Plan) -> Result<Applied, ApplyError> {
    let mut done = Applied::default();
    let fail = |done: &Applied, source| ApplyError {
        done: done.clone(),
        source,
    };
    if !plan.create.is_empty() {
        done.requests += client
            .create_routines(&plan.create, &plan.settings)
            .await
            .map_err(|e| fail(&done, e))?;
        done.created = plan.create.len();
    }
    for r in &plan.update {
        client
            .update_routine(&r.id, &plan.settings)
            .await
            .map_err(|e| fail(&done, e))?;
        done.requests += 1;
        done.updated += 1;
    }
    if !plan.delete.is_empty() {
        let ids: Vec<String> = plan.delete.iter().map(|r| r.id.clone()).collect();
        done.requests += client
            .delete_routines(&ids)
            .await
            .map_err(|e| fail(&done, e))?;
        done.deleted = ids.len();
    }
    Ok(done)
}

/// A sync that stopped part way.
#[derive(Debug, thiserror::Error)]
#[error(
    "routine sync stopped after {} created, {} updated, {} deleted: {source}; run the sync again to finish",
    done.created, done.updated, done.deleted
)]
pub struct ApplyError {
    pub done: Applied,
    pub source: SourceError,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routine(id: &str, number: &str, days: u32) -> Routine {
        Routine {
            id: id.into(),
            phone_number: number.into(),
            schedule_type: "interval".into(),
            interval_days: Some(days),
            notify_via: vec!["webhook".into()],
            notify_only_if_spam: Some(false),
            is_active: Some(true),
            ..Routine::default()
        }
    }

    #[test]
    fn the_plan_creates_updates_and_deletes_only_what_differs() {
        let settings = RoutineSettings {
            schedule: Schedule::Interval { days: 1 },
            notify_via: vec!["webhook".into()],
            notify_only_if_spam: false,
        };
        let numbers: Vec<String> = [
            "+15550000001",
            "+15550000002",
            "+15550000003",
            "+15550000004",
        ]
        .map(String::from)
        .into();
        let listed = vec![
            routine("a", "+15550000001", 1),
            routine("b", "+15550000002", 7),
            routine("c", "+15550000002", 1),
            routine("d", "+15559999999", 1),
            routine("e", "+15550000003", 3),
        ];
        let p = plan(&numbers, &listed, &settings);
        assert_eq!(p.create, ["+15550000004"]);
        let ids = |rs: &[Routine]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&p.update), ["e"], "the matching routine of 02 is kept");
        assert_eq!(ids(&p.delete), ["b", "d"]);
        assert_eq!(p.keep, 2);
        assert_eq!(p.checks_per_week(), 28.0);
        assert!(
            p.describe()
                .contains("create 1, update 1, delete 2, unchanged 2")
        );
        // Once applied, nothing is left to do.
        let after = vec![
            routine("a", "+15550000001", 1),
            routine("c", "+15550000002", 1),
            routine("e", "+15550000003", 1),
            routine("f", "+15550000004", 1),
        ];
        assert!(plan(&numbers, &after, &settings).is_empty());
    }
}
