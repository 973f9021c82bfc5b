//! The flights as the quickstart's client sees them: read from the shipped CSV file (the same
//! rows that ingestion uploaded, sample included), turned into entity rows for the feature
//! store and replayed as traffic.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Last month of the initial training period; later months are replayed as live traffic.
pub const LAST_TRAINING_MONTH: u32 = 6;

/// Arrival delay above which a flight counts as delayed, in minutes.
const DELAY_THRESHOLD_MINUTES: i64 = 15;

/// Lookup time of the features relative to the scheduled departure hour, in milliseconds:
/// one hour earlier, so the rolling delay windows never contain the flight itself.
pub const LOOKUP_OFFSET_MILLIS: i64 = 3_600_000;

/// Columns of the entity datasets, in file order.
pub const ENTITY_COLUMNS: &str =
    "event_timestamp,origin,tailnum,carrier,dest,hour,day_of_week,distance,month,day,delayed";

/// One flight, with what the quickstart needs of it.
#[derive(Clone, Debug)]
pub struct Flight {
    pub month: u32,
    pub day: u32,
    /// Scheduled departure hour, local time.
    pub hour: i64,
    /// Scheduled departure hour in UTC, as Unix milliseconds.
    pub time_hour: i64,
    pub origin: String,
    pub carrier: String,
    /// Empty when the file has none.
    pub tailnum: String,
    pub dest: String,
    pub distance: i64,
    /// 0 for Monday through 6 for Sunday.
    pub day_of_week: i64,
    /// `arr_delay > 15`; none for cancelled or diverted flights, which have no arrival delay.
    pub delayed: Option<bool>,
}

impl Flight {
    /// Returns the time at which features are looked up, as Unix milliseconds.
    pub fn lookup_time(&self) -> i64 {
        self.time_hour - LOOKUP_OFFSET_MILLIS
    }
}

/// Returns the sampling step that keeps about `rows` of `total` data lines: every k-th line.
pub fn sample_step(total: u64, rows: Option<u64>) -> u64 {
    match rows {
        Some(rows) => total.div_ceil(rows.max(1)).max(1),
        None => 1,
    }
}

/// Reads the flights file, keeping the data lines that a sample of about `sample` rows keeps
/// (see `ingest::write_sample`), in file order.
pub fn read_flights(path: &Path, sample: Option<u64>) -> anyhow::Result<Vec<Flight>> {
    let open = || -> anyhow::Result<_> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(csv::Reader::from_reader(flate2::read::GzDecoder::new(file)))
    };
    let total = match sample {
        Some(_) => open()?.records().count() as u64,
        None => 0,
    };
    let step = sample_step(total, sample);

    let mut reader = open()?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|header| header == name)
            .with_context(|| format!("{} has no column {name}", path.display()))
    };
    let (year, month, day) = (column("year")?, column("month")?, column("day")?);
    let (hour, origin, carrier) = (column("hour")?, column("origin")?, column("carrier")?);
    let (tailnum, dest, distance) = (column("tailnum")?, column("dest")?, column("distance")?);
    let (arr_delay, time_hour) = (column("arr_delay")?, column("time_hour")?);

    let mut flights = Vec::new();
    for (index, record) in reader.records().enumerate() {
        if !(index as u64).is_multiple_of(step) {
            continue;
        }
        let record = record.with_context(|| format!("cannot read {}", path.display()))?;
        let line = index + 2;
        let int = |position: usize| -> anyhow::Result<i64> {
            record[position].parse().with_context(|| {
                format!(
                    "{} line {line}: {:?} in column {} is not an integer",
                    path.display(),
                    &record[position],
                    &headers[position]
                )
            })
        };
        let time = chrono::DateTime::parse_from_rfc3339(&record[time_hour]).with_context(|| {
            format!(
                "{} line {line}: time_hour {:?} is not an RFC 3339 time",
                path.display(),
                &record[time_hour]
            )
        })?;
        let delayed = match &record[arr_delay] {
            "NA" | "" => None,
            _ => Some(int(arr_delay)? > DELAY_THRESHOLD_MINUTES),
        };
        let tail = match &record[tailnum] {
            "NA" => "",
            other => other,
        };
        flights.push(Flight {
            month: u32::try_from(int(month)?).context("month out of range")?,
            day: u32::try_from(int(day)?).context("day out of range")?,
            hour: int(hour)?,
            time_hour: time.timestamp_millis(),
            origin: record[origin].to_owned(),
            carrier: record[carrier].to_owned(),
            tailnum: tail.to_owned(),
            dest: record[dest].to_owned(),
            distance: int(distance)?,
            day_of_week: day_of_week(int(year)?, int(month)?, int(day)?),
            delayed,
        });
    }
    Ok(flights)
}

/// Writes the labelled flights among `flights` as an entity CSV file for the feature store
/// and returns its path. Each row has the lookup time as `event_timestamp`, the three join
/// keys, the request-time features and the label `delayed` (0 or 1).
pub fn write_entities<'a>(
    flights: impl IntoIterator<Item = &'a Flight>,
    path: PathBuf,
) -> anyhow::Result<(PathBuf, usize)> {
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "{ENTITY_COLUMNS}")?;
    let mut rows = 0;
    for flight in flights {
        let Some(delayed) = flight.delayed else {
            continue;
        };
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            format_millis(flight.lookup_time()),
            flight.origin,
            flight.tailnum,
            flight.carrier,
            flight.dest,
            flight.hour,
            flight.day_of_week,
            flight.distance,
            flight.month,
            flight.day,
            u8::from(delayed)
        )?;
        rows += 1;
    }
    out.flush()?;
    Ok((path, rows))
}

/// Formats Unix milliseconds as an RFC 3339 time in UTC.
pub fn format_millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Returns 0 for Monday through 6 for Sunday, from the proleptic Gregorian date.
fn day_of_week(year: i64, month: i64, day: i64) -> i64 {
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days_since_1970 = era * 146_097 + day_of_era - 719_468;
    // 1970-01-01 was a Thursday, day 3.
    (days_since_1970 + 3).rem_euclid(7)
}

/// Returns the English three-letter abbreviation of a month number.
pub fn month_name(month: u32) -> &'static str {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    usize::try_from(month)
        .ok()
        .and_then(|month| month.checked_sub(1))
        .and_then(|index| NAMES.get(index))
        .copied()
        .unwrap_or("?")
}

/// Returns the area under the ROC curve of `scores` for binary `labels`, with tied scores
/// counted as half; none when the labels hold one class.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|(_, label)| *label).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the positives' ranks, with the mean rank for each group of tied scores.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < pairs.len() {
        let mut end = start;
        while end + 1 < pairs.len() && pairs[end + 1].0 == pairs[start].0 {
            end += 1;
        }
        let mean_rank = (start + end) as f64 / 2.0 + 1.0;
        let tied_positives = pairs[start..=end].iter().filter(|(_, l)| *l).count() as f64;
        rank_sum += mean_rank * tied_positives;
        start = end + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_week_of_known_dates() {
        // 2013-01-01 was a Tuesday, 2013-06-30 a Sunday.
        assert_eq!(day_of_week(2013, 1, 1), 1);
        assert_eq!(day_of_week(2013, 6, 30), 6);
        assert_eq!(day_of_week(1970, 1, 1), 3);
    }

    #[test]
    fn month_names() {
        assert_eq!(month_name(1), "Jan");
        assert_eq!(month_name(12), "Dec");
        assert_eq!(month_name(13), "?");
        assert_eq!(month_name(0), "?");
    }

    #[test]
    fn auc_with_ties_and_one_class() {
        assert_eq!(auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auc(&[0.2, 0.8], &[true, true]), None);
    }
}
