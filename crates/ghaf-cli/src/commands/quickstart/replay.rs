//! Quickstart stage: replay July to December as live traffic. Hour by hour, the online
//! features are materialised up to the lookup time, then the flights of that hour are sent
//! in small requests. Each simulated day ends with its labels, and each simulated week with
//! a monitor evaluation. An alert's retraining job, the gate's decision and the canary that
//! follows are reported as they happen.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ghaf_client::Client;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::features::{self, EntityVersion};
use super::flights::{Flight, LAST_TRAINING_MONTH, month_name};
use super::http::Http;
use super::monitoring::{self, Evaluated, RECENT_TRAINING_SET};
use super::serving::{self, ENDPOINT};
use super::thousands;
use super::training::{self, Finished};

/// Largest number of rows in one inference request.
pub const MAX_REQUEST_ROWS: usize = 100;

/// Simulated days between two monitor evaluations.
const EVALUATION_DAYS: usize = 7;

/// Days of labelled flights that the retraining job trains on, counted back from the day of
/// the evaluation. Only replayed flights count, so the first weeks use fewer days.
const RECENT_DAYS: usize = 28;

/// Entity dataset of the recent flights.
const RECENT_ENTITIES: &str = "recent-flight-entities";

/// One scored row: the flight, the model version that scored it and the probability.
pub struct Scored {
    pub flight: usize,
    pub version: i64,
    pub score: f64,
}

/// A weekly evaluation and the simulated day it ran after.
pub struct WeekReport {
    pub month: u32,
    pub day: u32,
    pub evaluated: Evaluated,
    pub recent_rows: Option<u64>,
}

/// The retraining that an alert started.
pub struct Retraining {
    pub alert: Value,
    pub job_id: String,
    /// Set once the job ended: its outcome, or why it failed.
    pub outcome: Option<Result<Finished, String>>,
    /// Simulated day the alert fired and the job ended.
    pub fired_on: (u32, u32),
    pub ended_on: Option<(u32, u32)>,
}

/// Everything the replay observed.
#[derive(Default)]
pub struct Replayed {
    pub days: usize,
    pub requests: u64,
    pub rows: u64,
    pub labels: u64,
    pub scored: Vec<Scored>,
    pub weeks: Vec<WeekReport>,
    pub retraining: Option<Retraining>,
    /// Rollout states seen on the endpoint, in order: simulated day and the `rollout` object.
    pub rollouts: Vec<((u32, u32), Value)>,
    pub materialize_time: Duration,
    pub infer_time: Duration,
    pub label_time: Duration,
    pub monitor_time: Duration,
    /// Progress of the replay in days, drawn on standard error when it is a terminal.
    progress: Option<ProgressBar>,
}

impl Replayed {
    /// Prints a line of the replay's log above the progress bar.
    fn say(&self, line: &str) {
        say(self.progress.as_ref(), line);
    }
}

fn say(progress: Option<&ProgressBar>, line: &str) {
    match progress {
        Some(bar) => bar.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
}

/// Builds the progress bar over the replayed days. indicatif hides it when standard error is
/// not a terminal.
fn day_bar(days: usize) -> ProgressBar {
    let bar = ProgressBar::new(days as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "       replaying [{bar:30}] {pos}/{len} days, {msg} ({elapsed}, about {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Replays the flights after the training period. `flights` is every flight read, in any
/// order; `scratch` takes the recent entity files.
pub async fn replay(
    client: &Client,
    http: &Http,
    project: &str,
    flights: &[Flight],
    scratch: &Path,
) -> anyhow::Result<Replayed> {
    let mut days: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    for (index, flight) in flights.iter().enumerate() {
        if flight.month > LAST_TRAINING_MONTH {
            days.entry((flight.month, flight.day))
                .or_default()
                .push(index);
        }
    }
    let mut out = Replayed {
        progress: Some(day_bar(days.len())),
        ..Replayed::default()
    };
    let mut materialized_until: Option<i64> = None;
    // Each day's labels are posted while the next days replay, and every post has finished
    // before the monitor evaluates.
    let mut label_posts: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let replayed_days: Vec<(u32, u32)> = days.keys().copied().collect();

    for (day_index, (&date, indices)) in days.iter().enumerate() {
        let mut indices = indices.clone();
        indices.sort_by_key(|&i| (flights[i].time_hour, i));
        let mut labels = Vec::new();

        let mut start = 0;
        while start < indices.len() {
            let hour = flights[indices[start]].time_hour;
            let mut end = start;
            while end < indices.len() && flights[indices[end]].time_hour == hour {
                end += 1;
            }
            let group = &indices[start..end];
            start = end;

            let materialize_started = Instant::now();
            let lookup = flights[group[0]].lookup_time();
            features::materialize_range(client, project, materialized_until, lookup).await?;
            materialized_until = Some(lookup);
            out.materialize_time += materialize_started.elapsed();

            let infer_started = Instant::now();
            send_hour(http, flights, group, &mut out, &mut labels).await?;
            out.infer_time += infer_started.elapsed();
        }

        if !labels.is_empty() {
            out.labels += labels.len() as u64;
            let (client, project) = (client.clone(), project.to_owned());
            label_posts.spawn(async move {
                client
                    .post_labels(&project, ENDPOINT, &labels)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot post the labels of {} {}",
                            month_name(date.0),
                            date.1
                        )
                    })?;
                Ok(())
            });
        }
        out.days += 1;
        if let Some(bar) = &out.progress {
            bar.set_message(format!("{} flights", thousands(out.rows)));
            bar.inc(1);
        }

        follow_retraining(client, project, date, &mut out).await?;
        follow_rollout(client, date, project, &mut out).await?;

        if (day_index + 1) % EVALUATION_DAYS == 0 || day_index + 1 == days.len() {
            let label_started = Instant::now();
            while let Some(posted) = label_posts.join_next().await {
                posted.context("a label post panicked")??;
            }
            out.label_time += label_started.elapsed();

            let monitor_started = Instant::now();
            let week = evaluate_week(
                client,
                project,
                flights,
                &days,
                &replayed_days[..=day_index],
                scratch,
                &mut out,
            )
            .await?;
            out.monitor_time += monitor_started.elapsed();
            print_week(&week, &out);
            out.weeks.push(week);
        }
    }
    if let Some(bar) = out.progress.take() {
        bar.finish_and_clear();
    }
    Ok(out)
}

/// Sends the flights of one scheduled hour in requests of at most [`MAX_REQUEST_ROWS`] rows,
/// concurrently, and collects the labels of the scored rows.
async fn send_hour(
    http: &Http,
    flights: &[Flight],
    group: &[usize],
    out: &mut Replayed,
    labels: &mut Vec<Value>,
) -> anyhow::Result<()> {
    let requests = group.len().div_ceil(MAX_REQUEST_ROWS);
    let size = group.len().div_ceil(requests);
    let mut tasks = JoinSet::new();
    for chunk in group.chunks(size) {
        let rows: Vec<&Flight> = chunk.iter().map(|&i| &flights[i]).collect();
        let body = serving::infer_body(&rows);
        let http = http.clone();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            let answer = serving::infer(&http, &body, chunk.len()).await;
            (chunk, answer)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (chunk, answer) = joined.context("an inference task panicked")?;
        let answer = answer?;
        out.requests += 1;
        out.rows += chunk.len() as u64;
        for (row, (&flight, score)) in chunk.iter().zip(&answer.scores).enumerate() {
            out.scored.push(Scored {
                flight,
                version: answer.model_version,
                score: *score,
            });
            if let Some(delayed) = flights[flight].delayed {
                labels.push(json!({
                    "request_id": answer.request_id,
                    "row": row,
                    "label": f64::from(u8::from(delayed)),
                }));
            }
        }
    }
    Ok(())
}

/// Refreshes the recent training set (until an alert has fired), evaluates the monitor and
/// picks up a new alert's retraining job.
async fn evaluate_week(
    client: &Client,
    project: &str,
    flights: &[Flight],
    days: &BTreeMap<(u32, u32), Vec<usize>>,
    replayed: &[(u32, u32)],
    scratch: &Path,
    out: &mut Replayed,
) -> anyhow::Result<WeekReport> {
    let date = *replayed.last().context("no day was replayed")?;
    let mut recent_rows = None;
    if out.retraining.is_none() {
        let recent = &replayed[replayed.len().saturating_sub(RECENT_DAYS)..];
        let rows = recent
            .iter()
            .flat_map(|day| days[day].iter().map(|&i| &flights[i]));
        let entities: EntityVersion = features::upload_entities(
            client,
            project,
            RECENT_ENTITIES,
            "Labelled flights of the most recent replayed days, built by ghaf quickstart",
            rows,
            scratch,
        )
        .await?;
        let (_, count) =
            features::build_training_set(client, project, &entities, RECENT_TRAINING_SET).await?;
        recent_rows = Some(count);
    }

    let evaluated = monitoring::evaluate(client, project).await?;
    if out.retraining.is_none()
        && let Some(alert) = monitoring::alerts(client, project)
            .await?
            .into_iter()
            .find(|alert| alert["job_id"].is_string())
    {
        out.retraining = Some(Retraining {
            job_id: alert["job_id"].as_str().unwrap_or_default().to_owned(),
            alert,
            outcome: None,
            fired_on: date,
            ended_on: None,
        });
    }
    Ok(WeekReport {
        month: date.0,
        day: date.1,
        evaluated,
        recent_rows,
    })
}

/// Checks whether the retraining job ended, and prints the gate's decision when it did.
async fn follow_retraining(
    client: &Client,
    project: &str,
    date: (u32, u32),
    out: &mut Replayed,
) -> anyhow::Result<()> {
    let progress = out.progress.clone();
    let Some(retraining) = out.retraining.as_mut() else {
        return Ok(());
    };
    if retraining.outcome.is_some() {
        return Ok(());
    }
    let job = client
        .get_job(project, &retraining.job_id)
        .await
        .with_context(|| format!("cannot read job {}", retraining.job_id))?
        .value;
    if !matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    ) {
        return Ok(());
    }
    let outcome = training::finished(&job).map_err(|error| format!("{error:#}"));
    let line = match &outcome {
        Ok(done) => format!(
            "       {} {:>2}: retraining job {} registered version {} (holdout AUC {:.4}, the champion scored {} on that holdout); gate: {}",
            month_name(date.0),
            date.1,
            done.job_id,
            done.version,
            done.holdout_auc,
            done.champion_score
                .map_or_else(|| "nothing".to_owned(), |score| format!("{score:.4}")),
            done.gate_reason
        ),
        Err(error) => format!(
            "       {} {:>2}: retraining failed: {error}",
            month_name(date.0),
            date.1
        ),
    };
    say(progress.as_ref(), &line);
    retraining.outcome = Some(outcome);
    retraining.ended_on = Some(date);
    Ok(())
}

/// Records the endpoint's rollout when it changed since the last simulated day.
async fn follow_rollout(
    client: &Client,
    date: (u32, u32),
    project: &str,
    out: &mut Replayed,
) -> anyhow::Result<()> {
    let promoted = matches!(&out.retraining, Some(Retraining { outcome: Some(Ok(done)), .. }) if done.promoted);
    if !promoted {
        return Ok(());
    }
    let endpoint = client
        .get_endpoint(project, ENDPOINT)
        .await
        .context("cannot read the endpoint")?
        .value;
    let Some(rollout) = endpoint.get("rollout").filter(|r| !r.is_null()).cloned() else {
        return Ok(());
    };
    let changed = out.rollouts.last().is_none_or(|(_, last)| {
        last["status"] != rollout["status"] || last["step"] != rollout["step"]
    });
    if changed {
        out.say(&format!(
            "       {} {:>2}: rollout of version {} is {} at step {}{}",
            month_name(date.0),
            date.1,
            rollout["candidate_version"],
            rollout["status"].as_str().unwrap_or("?"),
            rollout["step"],
            rollout["reason"]
                .as_str()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ));
        out.rollouts.push((date, rollout));
    }
    Ok(())
}

fn print_week(week: &WeekReport, out: &Replayed) {
    let top: Vec<String> = week
        .evaluated
        .top
        .iter()
        .take(3)
        .map(|(name, _, effect, drifted)| {
            format!("{name} {effect:.2}{}", if *drifted { "*" } else { "" })
        })
        .collect();
    let recent = week
        .recent_rows
        .map(|rows| format!("; recent training set {} rows", thousands(rows)))
        .unwrap_or_default();
    out.say(&format!(
        "       {} {:>2}: {} flights so far in {} requests; drift share {:.2} over the newest {} predictions (top: {}){recent}{}",
        month_name(week.month),
        week.day,
        thousands(out.rows),
        thousands(out.requests),
        week.evaluated.drift_share,
        thousands(week.evaluated.rows),
        top.join(", "),
        match &out.retraining {
            Some(retraining) if retraining.fired_on == (week.month, week.day) => format!(
                "; alert {} fired and started job {}",
                retraining.alert["id"].as_str().unwrap_or("?"),
                retraining.job_id
            ),
            _ => String::new(),
        }
    ));
}
