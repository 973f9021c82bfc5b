//! Declared dataset schemas: column types, nullability, constraints, the event-time column,
//! classification labels and the acceptance policy, read from YAML or JSON, plus the
//! compatibility rule between two versions of a schema.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use chrono::FixedOffset;
use serde::{Deserialize, Serialize};

use crate::IngestError;

/// Maximum number of columns in one schema.
pub const MAX_COLUMNS: usize = 4096;

/// The value type of a column, and the Arrow type it is stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 64-bit signed integer (`Int64`).
    Integer,
    /// 64-bit float (`Float64`).
    Float,
    /// UTF-8 text (`Utf8`).
    String,
    /// `true`/`false` (`Boolean`).
    Boolean,
    /// Calendar date (`Date32`), written `YYYY-MM-DD`.
    Date,
    /// Instant with a time zone (`Timestamp(Microsecond, tz)`), written in RFC 3339; values
    /// without an offset are read in the column's `timezone`.
    Timestamp,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::String => "string",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }

    fn is_ordered(self) -> bool {
        !matches!(self, ColumnType::Boolean)
    }
}

/// Sensitivity label of a column, from least to most restricted. Compliance features decide
/// masking and access from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Public,
    #[default]
    Internal,
    Confidential,
    /// Personally identifiable information.
    Pii,
    /// Special-category data, such as health or biometric data.
    Sensitive,
}

/// One declared column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Whether the column may be null. Defaults to `true`.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// Sensitivity label; read it with [`ColumnSpec::label`]. `None` only in a schema as
    /// written: a new dataset stores `internal` for it, and a schema update stores the
    /// column's previous label, so omitting the label never lowers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// Free-text description for catalogue readers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Time zone of a `timestamp` column: `UTC` (the default) or a fixed offset such as
    /// `+04:00`. Values written without an offset are read in this zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Smallest allowed value, inclusive: a number, or an ISO date or timestamp string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    /// Largest allowed value, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    /// The only allowed values (`string` and `integer` columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// Regular expression (Rust `regex` syntax) that every value of a `string` column must
    /// match somewhere; anchor it with `^…$` to match the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// No two accepted rows of one version share a value of this column.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
}

/// Share of rows that may fail validation before a version is rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptancePolicy {
    /// Maximum share of failing rows, from 0 to 1. At or below it the version is created
    /// from the passing rows and the failing rows go to quarantine; above it no version is
    /// created. Defaults to 0: any failing row rejects the whole input.
    #[serde(default)]
    pub max_failure_share: f64,
}

impl Default for AcceptancePolicy {
    fn default() -> Self {
        Self {
            max_failure_share: 0.0,
        }
    }
}

/// A declared dataset schema, as written in a schema file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSchema {
    pub columns: Vec<ColumnSpec>,
    /// The column that contains each row's event time (`timestamp` or `date`, not null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Columns whose combined values identify a row; no two accepted rows of one version
    /// share them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique_key: Vec<String>,
    #[serde(default)]
    pub acceptance: AcceptancePolicy,
}

fn default_true() -> bool {
    true
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl DatasetSchema {
    /// Parses a schema from YAML (JSON is valid YAML) and checks it with
    /// [`DatasetSchema::validate`].
    pub fn from_yaml(text: &str) -> Result<Self, IngestError> {
        let schema: DatasetSchema = serde_saphyr::from_str(text)
            .map_err(|error| IngestError::InvalidSchema(error.to_string()))?;
        schema.validate()?;
        Ok(schema)
    }

    /// Decodes a schema from a JSON value and checks it.
    pub fn from_json(value: serde_json::Value) -> Result<Self, IngestError> {
        let schema: DatasetSchema = serde_json::from_value(value)
            .map_err(|error| IngestError::InvalidSchema(error.to_string()))?;
        schema.validate()?;
        Ok(schema)
    }

    /// Checks the rules a schema file must follow: unique, non-empty column names, valid
    /// constraints for each type, compilable patterns, and existing event-time and key
    /// columns.
    pub fn validate(&self) -> Result<(), IngestError> {
        let invalid = |message: String| Err(IngestError::InvalidSchema(message));
        if self.columns.is_empty() {
            return invalid("a schema declares at least one column".into());
        }
        if self.columns.len() > MAX_COLUMNS {
            return invalid(format!("a schema has at most {MAX_COLUMNS} columns"));
        }
        let mut names = HashSet::new();
        for column in &self.columns {
            column.validate()?;
            if !names.insert(column.name.as_str()) {
                return invalid(format!("column {:?} is declared twice", column.name));
            }
        }
        if let Some(event_time) = &self.event_time {
            let Some(column) = self.column(event_time) else {
                return invalid(format!(
                    "event_time names the unknown column {event_time:?}"
                ));
            };
            if !matches!(column.column_type, ColumnType::Timestamp | ColumnType::Date) {
                return invalid(format!(
                    "event_time column {event_time:?} has type {}; it must be timestamp or date",
                    column.column_type.as_str()
                ));
            }
            if column.nullable {
                return invalid(format!(
                    "event_time column {event_time:?} must be declared `nullable: false`"
                ));
            }
        }
        let mut key = HashSet::new();
        for name in &self.unique_key {
            if self.column(name).is_none() {
                return invalid(format!("unique_key names the unknown column {name:?}"));
            }
            if !key.insert(name) {
                return invalid(format!("unique_key lists column {name:?} twice"));
            }
        }
        let share = self.acceptance.max_failure_share;
        if !(0.0..=1.0).contains(&share) {
            return invalid(format!(
                "acceptance.max_failure_share is {share}; it must be between 0 and 1"
            ));
        }
        Ok(())
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|column| column.name == name)
    }

    /// Returns the Arrow schema of stored versions. Every field is nullable in Arrow, because the
    /// not-null rule is a check with its own failure count, not a storage property.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|column| Field::new(&column.name, column.arrow_type(), true))
            .collect();
        Arc::new(ArrowSchema::new(fields))
    }

    /// Lists why data stored under `self` (the previous version) cannot be read under `next`.
    /// An empty list means compatible: columns may be added as nullable, integer columns may
    /// widen to float, nullable rules may relax, and constraints and labels may change.
    pub fn incompatibilities(&self, next: &DatasetSchema) -> Vec<String> {
        let mut problems = Vec::new();
        for old in &self.columns {
            let Some(new) = next.column(&old.name) else {
                problems.push(format!("column {:?} is removed", old.name));
                continue;
            };
            let widening =
                old.column_type == ColumnType::Integer && new.column_type == ColumnType::Float;
            if old.column_type != new.column_type && !widening {
                problems.push(format!(
                    "column {:?} changes type from {} to {}",
                    old.name,
                    old.column_type.as_str(),
                    new.column_type.as_str()
                ));
            }
            if old.nullable && !new.nullable {
                problems.push(format!(
                    "column {:?} becomes non-nullable, but stored versions may contain nulls",
                    old.name
                ));
            }
            if old.column_type == ColumnType::Timestamp
                && new.column_type == ColumnType::Timestamp
                && old.timezone_name() != new.timezone_name()
            {
                problems.push(format!(
                    "column {:?} changes time zone from {} to {}",
                    old.name,
                    old.timezone_name(),
                    new.timezone_name()
                ));
            }
        }
        for new in &next.columns {
            if self.column(&new.name).is_none() && !new.nullable {
                problems.push(format!(
                    "new column {:?} is non-nullable, but stored versions have no values for it; \
                     add it as nullable",
                    new.name
                ));
            }
        }
        if self.event_time != next.event_time {
            problems.push(format!(
                "event_time changes from {:?} to {:?}",
                self.event_time, next.event_time
            ));
        }
        problems
    }
}

/// A column whose classification a schema update lowers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelChange {
    pub column: String,
    pub from: Classification,
    pub to: Classification,
}

impl DatasetSchema {
    /// Fills in the labels the schema omits: the label of the same column in `previous`,
    /// or `internal` for a new column or without a previous schema.
    pub fn resolve_labels(&mut self, previous: Option<&DatasetSchema>) {
        for column in &mut self.columns {
            if column.classification.is_none() {
                let inherited = previous
                    .and_then(|schema| schema.column(&column.name))
                    .map(ColumnSpec::label);
                column.classification = Some(inherited.unwrap_or_default());
            }
        }
    }

    /// Lists the columns whose label `next` sets lower than `self` does. Omitted labels in
    /// `next` are not lowerings; resolve them first with [`DatasetSchema::resolve_labels`].
    pub fn lowered_labels(&self, next: &DatasetSchema) -> Vec<LabelChange> {
        self.columns
            .iter()
            .filter_map(|old| {
                let new = next.column(&old.name)?;
                let to = new.classification?;
                (to < old.label()).then(|| LabelChange {
                    column: old.name.clone(),
                    from: old.label(),
                    to,
                })
            })
            .collect()
    }
}

impl ColumnSpec {
    /// Returns the column's sensitivity label, `internal` when the schema omits it.
    pub fn label(&self) -> Classification {
        self.classification.unwrap_or_default()
    }

    fn validate(&self) -> Result<(), IngestError> {
        let invalid = |message: String| Err(IngestError::InvalidSchema(message));
        let name = &self.name;
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return invalid(format!(
                "column name {name:?} must have 1 to 256 characters and no control characters"
            ));
        }
        let type_name = self.column_type.as_str();
        if self.timezone.is_some() && self.column_type != ColumnType::Timestamp {
            return invalid(format!(
                "column {name:?}: timezone applies only to timestamp columns"
            ));
        }
        if let Some(zone) = &self.timezone {
            parse_timezone(zone).map_err(|message| {
                IngestError::InvalidSchema(format!("column {name:?}: {message}"))
            })?;
        }
        for (key, bound) in [("min", &self.min), ("max", &self.max)] {
            let Some(bound) = bound else { continue };
            if !self.column_type.is_ordered() {
                return invalid(format!(
                    "column {name:?}: {key} does not apply to {type_name} columns"
                ));
            }
            self.bound(bound).map_err(|message| {
                IngestError::InvalidSchema(format!("column {name:?}: {key}: {message}"))
            })?;
        }
        if let (Some(min), Some(max)) = (&self.min, &self.max) {
            let (min, max) = (self.bound(min), self.bound(max));
            if let (Ok(min), Ok(max)) = (min, max)
                && min > max
            {
                return invalid(format!("column {name:?}: min is greater than max"));
            }
        }
        if let Some(allowed) = &self.allowed {
            if allowed.is_empty() {
                return invalid(format!("column {name:?}: allowed lists no value"));
            }
            let fits = |value: &serde_json::Value| match self.column_type {
                ColumnType::String => value.is_string(),
                ColumnType::Integer => value.is_i64(),
                _ => false,
            };
            if !matches!(self.column_type, ColumnType::String | ColumnType::Integer) {
                return invalid(format!(
                    "column {name:?}: allowed applies only to string and integer columns"
                ));
            }
            if let Some(bad) = allowed.iter().find(|value| !fits(value)) {
                return invalid(format!(
                    "column {name:?}: allowed value {bad} is not a {type_name}"
                ));
            }
        }
        if let Some(pattern) = &self.pattern {
            if self.column_type != ColumnType::String {
                return invalid(format!(
                    "column {name:?}: pattern applies only to string columns"
                ));
            }
            regex::Regex::new(pattern).map_err(|error| {
                IngestError::InvalidSchema(format!("column {name:?}: invalid pattern: {error}"))
            })?;
        }
        Ok(())
    }

    /// Returns the Arrow type that stores this column's values.
    pub fn arrow_type(&self) -> DataType {
        match self.column_type {
            ColumnType::Integer => DataType::Int64,
            ColumnType::Float => DataType::Float64,
            ColumnType::String => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(self.timezone_name().into()))
            }
        }
    }

    /// Returns the column's time zone as Arrow stores it: a fixed offset `+HH:MM`, `+00:00` for UTC.
    /// Arrow without its `chrono-tz` feature accepts only offsets, not zone names.
    pub fn timezone_name(&self) -> String {
        self.offset().to_string()
    }

    /// Returns the column's time zone offset, UTC when unset.
    pub fn offset(&self) -> FixedOffset {
        self.timezone
            .as_deref()
            .and_then(|zone| parse_timezone(zone).ok())
            .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"))
    }

    /// Converts a `min`/`max` bound to the column's comparable value: the exact integer for
    /// integer columns (a bound with a fraction is invalid there), the float for float
    /// columns, days since the epoch for dates, microseconds since the epoch for timestamps.
    /// Strings compare as text and are returned as `Bound::Text`.
    pub fn bound(&self, value: &serde_json::Value) -> Result<Bound, String> {
        let parsed = match (self.column_type, value) {
            (ColumnType::Integer, serde_json::Value::Number(number)) => number
                .as_i64()
                .or_else(|| whole_number(number))
                .map(Bound::Integer),
            (ColumnType::Float, serde_json::Value::Number(number)) => {
                number.as_f64().map(Bound::Number)
            }
            (ColumnType::String, serde_json::Value::String(text)) => {
                Some(Bound::Text(text.clone()))
            }
            (ColumnType::Date, serde_json::Value::String(text)) => crate::convert::parse_date(text)
                .ok()
                .map(|days| Bound::Integer(i64::from(days))),
            (ColumnType::Timestamp, serde_json::Value::String(text)) => {
                crate::convert::parse_timestamp(text, self.offset())
                    .ok()
                    .map(Bound::Integer)
            }
            _ => None,
        };
        parsed.ok_or_else(|| {
            format!(
                "{value} is not a valid bound for a {} column",
                self.column_type.as_str()
            )
        })
    }
}

/// Returns a float JSON number without a fraction, such as `1e6` in YAML, as an `i64`.
#[allow(clippy::cast_possible_truncation)]
fn whole_number(number: &serde_json::Number) -> Option<i64> {
    // 2^63 as f64; every whole float below it in magnitude converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let float = number.as_f64()?;
    (float.fract() == 0.0 && float.abs() < LIMIT).then_some(float as i64)
}

/// A range bound in comparable form. Values compare only with a bound of the same variant:
/// integers, dates and timestamps as exact `i64`, floats as `f64`, strings as text.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub enum Bound {
    Integer(i64),
    Number(f64),
    Text(String),
}

/// Parses `UTC`, `Z` or a fixed offset `±HH:MM`.
pub fn parse_timezone(zone: &str) -> Result<FixedOffset, String> {
    if zone.eq_ignore_ascii_case("utc") || zone == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let invalid = || {
        format!(
            "invalid timezone {zone:?}: use UTC or a fixed offset such as +04:00 \
             (zone names such as Asia/Dubai are not supported)"
        )
    };
    let (sign, rest) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return Err(invalid()),
    };
    let (hours, minutes) = rest.split_once(':').ok_or_else(invalid)?;
    let hours: i32 = hours.parse().map_err(|_| invalid())?;
    let minutes: i32 = minutes.parse().map_err(|_| invalid())?;
    if hours > 23 || minutes > 59 {
        return Err(invalid());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLIGHTS_LIKE: &str = r#"
columns:
  - name: id
    type: integer
    nullable: false
    unique: true
  - name: carrier
    type: string
    allowed: [UA, AA]
    pattern: "^[A-Z]{2}$"
    classification: public
  - name: delay
    type: float
    min: -100
    max: 2000
  - name: at
    type: timestamp
    nullable: false
    timezone: "+04:00"
event_time: at
unique_key: [id]
acceptance:
  max_failure_share: 0.05
"#;

    #[test]
    fn schema_parses_from_yaml() {
        let schema = DatasetSchema::from_yaml(FLIGHTS_LIKE).unwrap();
        assert_eq!(schema.columns.len(), 4);
        assert_eq!(schema.columns[1].label(), Classification::Public);
        assert_eq!(schema.columns[0].label(), Classification::Internal);
        assert!(!schema.columns[0].nullable);
        assert!(schema.columns[2].nullable);
        assert_eq!(schema.acceptance.max_failure_share, 0.05);
        assert_eq!(
            schema.columns[3].arrow_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+04:00".into()))
        );
        assert_eq!(schema.columns[0].timezone_name(), "+00:00");
    }

    #[test]
    fn schema_json_round_trips() {
        let schema = DatasetSchema::from_yaml(FLIGHTS_LIKE).unwrap();
        let json = serde_json::to_value(&schema).unwrap();
        assert_eq!(DatasetSchema::from_json(json).unwrap(), schema);
    }

    #[test]
    fn invalid_schemas_are_rejected() {
        let cases = [
            ("columns: []", "at least one column"),
            (
                "columns: [{name: a, type: integer}, {name: a, type: float}]",
                "declared twice",
            ),
            ("columns: [{name: a, type: decimal}]", "decimal"),
            ("columns: [{name: a, type: integer, colour: red}]", "colour"),
            (
                "columns: [{name: a, type: boolean, min: 1}]",
                "min does not apply",
            ),
            (
                "columns: [{name: a, type: integer, min: 5, max: 1}]",
                "greater than max",
            ),
            (
                "columns: [{name: a, type: string, pattern: \"(\"}]",
                "invalid pattern",
            ),
            (
                "columns: [{name: a, type: float, allowed: [1]}]",
                "allowed applies only",
            ),
            (
                "columns: [{name: a, type: string, allowed: [1]}]",
                "is not a string",
            ),
            (
                "columns: [{name: a, type: date}]\nevent_time: b",
                "unknown column",
            ),
            (
                "columns: [{name: a, type: date}]\nevent_time: a",
                "nullable: false",
            ),
            (
                "columns: [{name: a, type: string, nullable: false}]\nevent_time: a",
                "must be timestamp",
            ),
            (
                "columns: [{name: a, type: timestamp, timezone: Asia/Dubai}]",
                "invalid timezone",
            ),
            (
                "columns: [{name: a, type: string}]\nunique_key: [b]",
                "unknown column",
            ),
            (
                "columns: [{name: a, type: string}]\nacceptance: {max_failure_share: 2}",
                "between 0 and 1",
            ),
            (
                "columns: [{name: a, type: date, min: \"2020-13-01\"}]",
                "not a valid bound",
            ),
            ("{{{", ""),
        ];
        for (text, expected) in cases {
            let error = DatasetSchema::from_yaml(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn integer_bounds_are_exact() {
        let spec = column("n", ColumnType::Integer);
        let bound = |value: serde_json::Value| spec.bound(&value);
        assert_eq!(
            bound(serde_json::json!(9_007_199_254_740_993_i64)),
            Ok(Bound::Integer(9_007_199_254_740_993))
        );
        assert_eq!(bound(serde_json::json!(1e6)), Ok(Bound::Integer(1_000_000)));
        assert!(bound(serde_json::json!(0.5)).is_err());
    }

    #[test]
    fn compatibility_rules() {
        let old = DatasetSchema::from_yaml(FLIGHTS_LIKE).unwrap();
        assert!(old.incompatibilities(&old).is_empty());

        let mut widened = old.clone();
        widened.columns[0].column_type = ColumnType::Float;
        widened.columns.push(ColumnSpec {
            nullable: true,
            ..column("extra", ColumnType::String)
        });
        widened.columns[2].nullable = true;
        assert!(old.incompatibilities(&widened).is_empty());

        let mut removed = old.clone();
        removed.columns.remove(1);
        let problems = old.incompatibilities(&removed);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("removed"));

        let mut narrowed = old.clone();
        narrowed.columns[2].column_type = ColumnType::Integer;
        narrowed.columns[2].nullable = false;
        narrowed.columns.push(ColumnSpec {
            nullable: false,
            ..column("required", ColumnType::Integer)
        });
        narrowed.columns[3].timezone = Some("UTC".into());
        let problems = old.incompatibilities(&narrowed);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    fn column(name: &str, column_type: ColumnType) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            column_type,
            nullable: true,
            classification: None,
            description: String::new(),
            timezone: None,
            min: None,
            max: None,
            allowed: None,
            pattern: None,
            unique: false,
        }
    }
}
