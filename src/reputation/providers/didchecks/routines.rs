//! DIDChecks monitoring routines: the provider checks a number on a
//! schedule and reports through its webhooks. Each routine check is billed,
//! so these calls are made only by `sipsentry own routines`, never on the
//! call path.
//!
//! ```text
//! GET    /routines        {"data": {"routines": [{id, phoneNumber, scheduleType, intervalDays,
//!                           weeklyDays, notifyVia, notifyOnlyIfSpam, isActive, lastScore, lastCheckedAt}]}}
//! POST   /routines/bulk   {"phoneNumbers": [...≤100], "defaultSettings": {scheduleType, ...}}
//! PUT    /routines/{id}   {scheduleType, intervalDays | weeklyDays, notifyVia, notifyOnlyIfSpam, isActive}
//! DELETE /routines/{id}
//! DELETE /routines/bulk   {"ids": [...≤100]}
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BULK_MAX, DidChecks, Envelope};
use crate::reputation::SourceError;

/// A request answered 429 is sent again this many times, after the
/// answer's `Retry-After` (or 1 s, doubling) each time.
pub const RATE_LIMITED_RETRIES: u32 = 3;

async fn retrying<T, F, Fut>(mut send: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SourceError>>,
{
    let mut wait = Duration::from_secs(1);
    for _ in 0..RATE_LIMITED_RETRIES {
        match send().await {
            Err(SourceError::RateLimited { retry_after, .. }) => {
                tokio::time::sleep(retry_after.unwrap_or(wait)).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    send().await
}

/// When the provider runs a routine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Schedule {
    /// Every `days` days.
    Interval { days: u32 },
    /// On these weekdays, 0 = Sunday … 6 = Saturday.
    Weekly { days: Vec<u8> },
}

/// What a routine should be: its schedule and how it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutineSettings {
    pub schedule: Schedule,
    pub notify_via: Vec<String>,
    pub notify_only_if_spam: bool,
}

impl RoutineSettings {
    /// The request fields, as `POST /routines` and `PUT /routines/{id}` take
    /// them.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "notifyVia": self.notify_via,
            "notifyOnlyIfSpam": self.notify_only_if_spam,
        });
        match &self.schedule {
            Schedule::Interval { days } => {
                v["scheduleType"] = "interval".into();
                v["intervalDays"] = (*days).into();
            }
            Schedule::Weekly { days } => {
                v["scheduleType"] = "weekly".into();
                v["weeklyDays"] = days.clone().into();
            }
        }
        v
    }

    /// Whether `routine` already runs as these settings say.
    pub fn matches(&self, routine: &Routine) -> bool {
        let schedule = match &self.schedule {
            Schedule::Interval { days } => {
                routine.schedule_type == "interval" && routine.interval_days == Some(*days)
            }
            Schedule::Weekly { days } => {
                let mut theirs = routine.weekly_days.clone().unwrap_or_default();
                theirs.sort_unstable();
                theirs.dedup();
                routine.schedule_type == "weekly" && theirs == *days
            }
        };
        let mut via = routine.notify_via.clone();
        via.sort();
        let mut want = self.notify_via.clone();
        want.sort();
        schedule
            && via == want
            // The provider's default is true.
            && routine.notify_only_if_spam.unwrap_or(true) == self.notify_only_if_spam
            && routine.is_active.unwrap_or(true)
    }
}

/// One routine as `GET /routines` lists it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Routine {
    pub id: String,
    pub phone_number: String,
    pub schedule_type: String,
    pub interval_days: Option<u32>,
    pub weekly_days: Option<Vec<u8>>,
    pub notify_via: Vec<String>,
    pub notify_only_if_spam: Option<bool>,
    pub is_active: Option<bool>,
    pub last_run: Option<String>,
    pub next_run: Option<String>,
    /// The last spam score (0–100) a check of this routine found.
    pub last_score: Option<f64>,
    pub last_checked_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RoutineList {
    routines: Vec<Routine>,
}

impl DidChecks {
    /// `GET /routines`: every routine of the account.
    pub async fn routines(&self) -> Result<Vec<Routine>, SourceError> {
        let url = format!("{}/routines", self.base);
        let env: Envelope<RoutineList> = retrying(|| async {
            self.limiter.until_ready().await;
            self.call(self.http.get(&url)).await
        })
        .await?;
        Ok(env.data.unwrap_or_default().routines)
    }

    /// `POST /routines/bulk`, [`BULK_MAX`] numbers per request; the number
    /// of requests made.
    pub async fn create_routines(
        &self,
        numbers: &[String],
        settings: &RoutineSettings,
    ) -> Result<usize, SourceError> {
        let mut requests = 0;
        for chunk in numbers.chunks(BULK_MAX) {
            let url = format!("{}/routines/bulk", self.base);
            let body = serde_json::json!({
                "phoneNumbers": chunk,
                "defaultSettings": settings.to_json(),
            });
            let _: Envelope<serde_json::Value> = retrying(|| async {
                self.limiter.until_ready().await;
                self.call(self.http.post(&url).json(&body)).await
            })
            .await?;
            requests += 1;
        }
        Ok(requests)
    }

    /// `PUT /routines/{id}`: the routine made to run as `settings` say, and
    /// active.
    pub async fn update_routine(
        &self,
        id: &str,
        settings: &RoutineSettings,
    ) -> Result<(), SourceError> {
        let url = format!("{}/routines/{}", self.base, super::super::encode(id));
        let mut body = settings.to_json();
        body["isActive"] = true.into();
        let _: Envelope<serde_json::Value> = retrying(|| async {
            self.limiter.until_ready().await;
            self.call(self.http.put(&url).json(&body)).await
        })
        .await?;
        Ok(())
    }

    /// Deletes routines: `DELETE /routines/{id}` for one,
    /// `DELETE /routines/bulk` ([`BULK_MAX`] ids per request) for more.
    pub async fn delete_routines(&self, ids: &[String]) -> Result<usize, SourceError> {
        if let [id] = ids {
            let url = format!("{}/routines/{}", self.base, super::super::encode(id));
            let _: Envelope<serde_json::Value> = retrying(|| async {
                self.limiter.until_ready().await;
                self.call(self.http.delete(&url)).await
            })
            .await?;
            return Ok(1);
        }
        let mut requests = 0;
        for chunk in ids.chunks(BULK_MAX) {
            let url = format!("{}/routines/bulk", self.base);
            let body = serde_json::json!({ "ids": chunk });
            let _: Envelope<serde_json::Value> = retrying(|| async {
                self.limiter.until_ready().await;
                self.call(self.http.delete(&url).json(&body)).await
            })
            .await?;
            requests += 1;
        }
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(json: &str) -> Routine {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_listed_routine_matches_only_the_same_schedule_and_notification() {
        let want = RoutineSettings {
            schedule: Schedule::Interval { days: 7 },
            notify_via: vec!["webhook".into()],
            notify_only_if_spam: false,
        };
        let same = listed(
            r#"{"id":"a","phoneNumber":"+33612345678","scheduleType":"interval","intervalDays":7,
                "notifyVia":["webhook"],"notifyOnlyIfSpam":false,"isActive":true,"lastScore":85}"#,
        );
        assert!(want.matches(&same));
        assert_eq!(same.last_score, Some(85.0));
        for other in [
            r#"{"scheduleType":"interval","intervalDays":3,"notifyVia":["webhook"],"notifyOnlyIfSpam":false}"#,
            r#"{"scheduleType":"interval","intervalDays":7,"notifyVia":["email"],"notifyOnlyIfSpam":false}"#,
            // notifyOnlyIfSpam defaults to true at the provider.
            r#"{"scheduleType":"interval","intervalDays":7,"notifyVia":["webhook"]}"#,
            r#"{"scheduleType":"interval","intervalDays":7,"notifyVia":["webhook"],"notifyOnlyIfSpam":false,"isActive":false}"#,
            r#"{"scheduleType":"weekly","weeklyDays":[1],"notifyVia":["webhook"],"notifyOnlyIfSpam":false}"#,
        ] {
            assert!(!want.matches(&listed(other)), "{other}");
        }
        let weekly = RoutineSettings {
            schedule: Schedule::Weekly { days: vec![1, 4] },
            ..want
        };
        assert!(weekly.matches(&listed(
            r#"{"scheduleType":"weekly","weeklyDays":[4,1],"notifyVia":["webhook"],"notifyOnlyIfSpam":false}"#
        )));
        assert_eq!(
            weekly.to_json(),
            serde_json::json!({"scheduleType":"weekly","weeklyDays":[1,4],"notifyVia":["webhook"],"notifyOnlyIfSpam":false})
        );
    }
}
