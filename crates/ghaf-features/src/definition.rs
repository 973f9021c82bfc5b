//! Feature store definitions: entities, feature views and feature services, read from YAML
//! or JSON files, plus the rules each definition must follow on its own. Checks against a
//! dataset's schema happen when a view is compiled (see [`crate::view`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ghaf_core::Name;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::FeatureError;

/// Microseconds per second, the unit of every timestamp and duration in this crate.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// Type of an entity's join key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// 64-bit signed integer.
    Integer,
    /// UTF-8 text.
    String,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Integer => "integer",
            KeyType::String => "string",
        }
    }
}

/// A business object that features describe, identified by one join key column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub name: String,
    /// Column that holds the key, in datasets and entity tables; defaults to the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_key: Option<String>,
    pub value_type: KeyType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Entity {
    pub fn join_key(&self) -> &str {
        self.join_key.as_deref().unwrap_or(&self.name)
    }
}

/// The dataset a view reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    pub dataset: String,
    /// Pinned dataset version; without it every use reads the latest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// Aggregation function of a windowed feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFunction {
    Mean,
    Sum,
    Min,
    Max,
    /// Number of non-null values.
    Count,
}

impl AggregateFunction {
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateFunction::Mean => "mean",
            AggregateFunction::Sum => "sum",
            AggregateFunction::Min => "min",
            AggregateFunction::Max => "max",
            AggregateFunction::Count => "count",
        }
    }
}

/// A rolling aggregation per entity key: at each source row, the aggregate of the values of
/// the same key whose event time lies in `(row time - window, row time]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregation {
    pub function: AggregateFunction,
    /// SQL expression over the dataset's columns whose values are aggregated.
    pub expression: String,
    /// Window length, such as `3h`, `90m` or `7d`.
    pub window: String,
}

/// One feature of a view: a SQL expression over the source columns, or a windowed
/// aggregation. Without either, the feature is the source column of the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Aggregation>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn default_true() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// A feature view: features of one or more entities computed from one dataset, with the
/// event-time column that orders them and the TTL that bounds how old a value may be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureViewSpec {
    pub name: String,
    /// Entity names; their join keys identify a row.
    pub entities: Vec<String>,
    pub source: SourceRef,
    /// Timestamp column of the source. Without one, every row is valid at all times (static
    /// attributes), the TTL must be absent and each key should have one row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Timestamp column that breaks ties on event time: the later created time wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    /// Maximum age of a value relative to the lookup time, such as `2h` or `7d`; absent or
    /// `0` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    pub features: Vec<FeatureSpec>,
    /// Whether materialisation writes the view to the online store.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub online: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The part of a view whose change creates a new version: its keys, source, timestamps and
/// features. Description, tags, TTL and the online flag are edited in place.
#[derive(Serialize)]
struct VersionedPart<'a> {
    entities: &'a [String],
    keys: Vec<(&'a str, KeyType)>,
    source: &'a SourceRef,
    event_time: &'a Option<String>,
    created_time: &'a Option<String>,
    features: Vec<(&'a str, &'a Option<String>, &'a Option<Aggregation>)>,
}

impl FeatureViewSpec {
    /// Returns the TTL in microseconds, `None` when the view has no limit.
    pub fn ttl_micros(&self) -> Result<Option<i64>, FeatureError> {
        match &self.ttl {
            None => Ok(None),
            Some(text) => {
                let micros = parse_duration(text).map_err(|message| {
                    FeatureError::definition(format!("feature view {:?}: ttl {message}", self.name))
                })?;
                Ok((micros > 0).then_some(micros))
            }
        }
    }

    /// Returns the hex SHA-256 of the versioned part of the definition, including the join
    /// key column and type of each entity found in `entities`.
    pub fn fingerprint(&self, entities: &[Entity]) -> String {
        let keys = self
            .entities
            .iter()
            .filter_map(|name| entities.iter().find(|e| &e.name == name))
            .map(|e| (e.join_key(), e.value_type))
            .collect();
        let part = VersionedPart {
            entities: &self.entities,
            keys,
            source: &self.source,
            event_time: &self.event_time,
            created_time: &self.created_time,
            features: self
                .features
                .iter()
                .map(|f| (f.name.as_str(), &f.expression, &f.aggregation))
                .collect(),
        };
        let json = serde_json::to_vec(&part).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureSpec> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// A named set of features that one model uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureServiceSpec {
    pub name: String,
    /// References: `view` (every feature), `view:feature` or `view@vN:feature`.
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The definitions of one project: the content of a definitions directory or of an apply
/// request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definitions {
    #[serde(default)]
    pub entities: Vec<Entity>,
    #[serde(default)]
    pub feature_views: Vec<FeatureViewSpec>,
    #[serde(default)]
    pub feature_services: Vec<FeatureServiceSpec>,
}

/// Parses a duration: a whole number followed by `s`, `m`, `h`, `d` or `w`, or a bare number
/// of seconds. Returns microseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (digits, unit_seconds) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3_600),
        Some((at, 'd')) => (&text[..at], 86_400),
        Some((at, 'w')) => (&text[..at], 604_800),
        _ => (text, 1),
    };
    let invalid = || {
        format!(
            "{text:?} is not a duration; write a whole number with a unit s, m, h, d or w, such as \"2h\""
        )
    };
    let count: i64 = digits.trim().parse().map_err(|_| invalid())?;
    if count < 0 {
        return Err(invalid());
    }
    count
        .checked_mul(unit_seconds)
        .and_then(|seconds| seconds.checked_mul(MICROS_PER_SECOND))
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn check_name(what: &str, name: &str) -> Result<(), FeatureError> {
    Name::parse(name)
        .map(|_| ())
        .map_err(|error| FeatureError::definition(format!("{what} name {name:?}: {error}")))
}

impl Definitions {
    /// Parses one YAML or JSON document.
    pub fn from_yaml(text: &str) -> Result<Self, FeatureError> {
        serde_saphyr::from_str(text).map_err(|error| FeatureError::definition(error.to_string()))
    }

    /// Reads every `.yaml`, `.yml` and `.json` file of a directory (not its subdirectories),
    /// in name order, and merges them. A name defined twice is an error naming both files.
    pub fn load_dir(dir: &Path) -> Result<Self, FeatureError> {
        let entries = std::fs::read_dir(dir).map_err(|error| {
            FeatureError::definition(format!(
                "cannot read the definitions directory {}: {error}",
                dir.display()
            ))
        })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if path.is_file() && matches!(extension, "yaml" | "yml" | "json") {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(FeatureError::definition(format!(
                "{} has no .yaml, .yml or .json definition files",
                dir.display()
            )));
        }

        let mut merged = Definitions::default();
        let mut origin: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            let part = Self::from_yaml(&text).map_err(|error| {
                FeatureError::definition(format!("{}: {error}", file.display()))
            })?;
            let names = part
                .entities
                .iter()
                .map(|e| ("entity", &e.name))
                .chain(part.feature_views.iter().map(|v| ("feature view", &v.name)))
                .chain(
                    part.feature_services
                        .iter()
                        .map(|s| ("feature service", &s.name)),
                );
            for (kind, name) in names {
                let key = (kind.to_owned(), name.clone());
                if let Some(first) = origin.get(&key) {
                    return Err(FeatureError::definition(format!(
                        "{kind} {name:?} is defined in both {} and {}",
                        first.display(),
                        file.display()
                    )));
                }
                origin.insert(key, file.clone());
            }
            merged.entities.extend(part.entities);
            merged.feature_views.extend(part.feature_views);
            merged.feature_services.extend(part.feature_services);
        }
        Ok(merged)
    }

    /// Checks the rules that need no dataset: valid unique names, known entities, parsable
    /// durations, one of expression or aggregation per feature, and service references
    /// that name views of these definitions or of `known_views`.
    pub fn validate(
        &self,
        known_entities: &[Entity],
        known_views: &[FeatureViewSpec],
    ) -> Result<(), FeatureError> {
        let mut seen = BTreeSet::new();
        for entity in &self.entities {
            check_name("entity", &entity.name)?;
            if !seen.insert(entity.name.as_str()) {
                return Err(FeatureError::definition(format!(
                    "entity {:?} is defined twice",
                    entity.name
                )));
            }
            if entity.join_key().is_empty() {
                return Err(FeatureError::definition(format!(
                    "entity {:?} has an empty join key",
                    entity.name
                )));
            }
        }
        let entity = |name: &str| {
            self.entities
                .iter()
                .chain(known_entities)
                .find(|e| e.name == name)
        };

        let mut views = BTreeSet::new();
        for view in &self.feature_views {
            check_name("feature view", &view.name)?;
            if !views.insert(view.name.as_str()) {
                return Err(FeatureError::definition(format!(
                    "feature view {:?} is defined twice",
                    view.name
                )));
            }
            validate_view(view, &entity)?;
        }

        let mut services = BTreeSet::new();
        for service in &self.feature_services {
            check_name("feature service", &service.name)?;
            if !services.insert(service.name.as_str()) {
                return Err(FeatureError::definition(format!(
                    "feature service {:?} is defined twice",
                    service.name
                )));
            }
            if service.features.is_empty() {
                return Err(FeatureError::definition(format!(
                    "feature service {:?} lists no features",
                    service.name
                )));
            }
            for reference in &service.features {
                let parsed = FeatureRef::parse_service_entry(reference)?;
                let view = self
                    .feature_views
                    .iter()
                    .chain(known_views)
                    .find(|v| v.name == parsed.view);
                let Some(view) = view else {
                    return Err(FeatureError::definition(format!(
                        "feature service {:?} references the unknown feature view {:?}",
                        service.name, parsed.view
                    )));
                };
                if let Some(feature) = &parsed.feature
                    && parsed.version.is_none()
                    && view.feature(feature).is_none()
                {
                    return Err(FeatureError::definition(format!(
                        "feature service {:?} references {reference:?}, but view {:?} has no feature {feature:?}",
                        service.name, view.name
                    )));
                }
            }
        }
        Ok(())
    }
}

fn validate_view<'a>(
    view: &FeatureViewSpec,
    entity: &impl Fn(&str) -> Option<&'a Entity>,
) -> Result<(), FeatureError> {
    let invalid = |message: String| {
        Err(FeatureError::definition(format!(
            "feature view {:?}: {message}",
            view.name
        )))
    };
    if view.entities.is_empty() {
        return invalid("lists no entities; name at least one".to_owned());
    }
    let mut keys = BTreeSet::new();
    for name in &view.entities {
        let Some(found) = entity(name) else {
            return invalid(format!(
                "unknown entity {name:?}; define it under `entities`"
            ));
        };
        if !keys.insert(found.join_key()) {
            return invalid(format!("join key {:?} appears twice", found.join_key()));
        }
    }
    if view.features.is_empty() {
        return invalid("defines no features".to_owned());
    }
    view.ttl_micros()?;
    if view.event_time.is_none() && view.ttl_micros()?.is_some() {
        return invalid("a TTL needs an event_time column".to_owned());
    }
    if view.event_time.is_none() && view.created_time.is_some() {
        return invalid("a created_time column needs an event_time column".to_owned());
    }
    let mut names = BTreeSet::new();
    for feature in &view.features {
        check_name("feature", &feature.name)?;
        if !names.insert(feature.name.as_str()) {
            return invalid(format!("feature {:?} is defined twice", feature.name));
        }
        if keys.contains(feature.name.as_str()) {
            return invalid(format!(
                "feature {:?} has the name of a join key",
                feature.name
            ));
        }
        if feature.expression.is_some() && feature.aggregation.is_some() {
            return invalid(format!(
                "feature {:?} has both an expression and an aggregation; keep one",
                feature.name
            ));
        }
        if let Some(aggregation) = &feature.aggregation {
            if view.event_time.is_none() {
                return invalid(format!(
                    "feature {:?} is a windowed aggregation, which needs an event_time column",
                    feature.name
                ));
            }
            let window = parse_duration(&aggregation.window).map_err(|message| {
                FeatureError::definition(format!(
                    "feature view {:?}: window of {:?}: {message}",
                    view.name, feature.name
                ))
            })?;
            if window <= 0 {
                return invalid(format!(
                    "window of feature {:?} must be longer than zero",
                    feature.name
                ));
            }
        }
    }
    Ok(())
}

/// A parsed feature reference: `view:feature`, `view@vN:feature`, or (in a feature service)
/// `view` alone for every feature of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureRef {
    pub view: String,
    /// Pinned version; `None` means the latest.
    pub version: Option<i64>,
    /// `None` only for a whole-view entry of a feature service.
    pub feature: Option<String>,
}

impl FeatureRef {
    /// Parses `view:feature` or `view@vN:feature`.
    pub fn parse(reference: &str) -> Result<Self, FeatureError> {
        let parsed = Self::parse_service_entry(reference)?;
        if parsed.feature.is_none() {
            return Err(FeatureError::InvalidReference {
                reference: reference.to_owned(),
                message: "expected view:feature or view@vN:feature".to_owned(),
            });
        }
        Ok(parsed)
    }

    /// Parses a reference that may also be a bare `view` or `view@vN`.
    pub fn parse_service_entry(reference: &str) -> Result<Self, FeatureError> {
        let invalid = |message: &str| FeatureError::InvalidReference {
            reference: reference.to_owned(),
            message: message.to_owned(),
        };
        let (view_part, feature) = match reference.split_once(':') {
            Some((view, feature)) => {
                if feature.is_empty() || feature.contains(':') {
                    return Err(invalid("the feature name after `:` is empty or has a `:`"));
                }
                (view, Some(feature.to_owned()))
            }
            None => (reference, None),
        };
        let (view, version) = match view_part.split_once('@') {
            Some((view, version)) => {
                let number = version
                    .strip_prefix('v')
                    .and_then(|n| n.parse::<i64>().ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("the version after `@` must be v1, v2, ..."))?;
                (view, Some(number))
            }
            None => (view_part, None),
        };
        if view.is_empty() {
            return Err(invalid("the view name is empty"));
        }
        Ok(FeatureRef {
            view: view.to_owned(),
            version,
            feature,
        })
    }
}

impl std::fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.view)?;
        if let Some(version) = self.version {
            write!(f, "@v{version}")?;
        }
        if let Some(feature) = &self.feature {
            write!(f, ":{feature}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("2h"), Ok(2 * 3_600 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("90m"), Ok(5_400 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("1w"), Ok(604_800 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("30"), Ok(30 * MICROS_PER_SECOND));
        assert!(parse_duration("2 hours").is_err());
        assert!(parse_duration("-1h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn references_parse() {
        let latest = FeatureRef::parse("weather:temp").unwrap();
        assert_eq!(latest.view, "weather");
        assert_eq!(latest.version, None);
        assert_eq!(latest.feature.as_deref(), Some("temp"));
        let pinned = FeatureRef::parse("weather@v2:temp").unwrap();
        assert_eq!(pinned.version, Some(2));
        assert_eq!(pinned.to_string(), "weather@v2:temp");
        assert!(FeatureRef::parse("weather").is_err());
        assert!(FeatureRef::parse("weather@2:temp").is_err());
        assert!(FeatureRef::parse("weather@v0:temp").is_err());
        assert!(FeatureRef::parse(":temp").is_err());
        let whole = FeatureRef::parse_service_entry("weather@v3").unwrap();
        assert_eq!(whole.feature, None);
        assert_eq!(whole.version, Some(3));
    }

    #[test]
    fn fingerprint_ignores_ttl_and_description() {
        let text = "
entities: [{name: origin, value_type: string}]
feature_views:
  - name: weather
    entities: [origin]
    source: {dataset: weather}
    event_time: time_hour
    ttl: 2h
    features: [{name: temp}]
";
        let defs = Definitions::from_yaml(text).unwrap();
        defs.validate(&[], &[]).unwrap();
        let view = &defs.feature_views[0];
        let mut edited = view.clone();
        edited.ttl = Some("3h".to_owned());
        edited.description = "hourly".to_owned();
        let entities = &defs.entities;
        assert_eq!(view.fingerprint(entities), edited.fingerprint(entities));
        edited.features[0].expression = Some("temp * 2".to_owned());
        assert_ne!(view.fingerprint(entities), edited.fingerprint(entities));
        let mut retyped = defs.entities.clone();
        retyped[0].join_key = Some("airport".to_owned());
        assert_ne!(view.fingerprint(entities), view.fingerprint(&retyped));
    }

    #[test]
    fn unknown_entity_rejected() {
        let text = "
feature_views:
  - name: weather
    entities: [origin]
    source: {dataset: weather}
    features: [{name: temp}]
";
        let defs = Definitions::from_yaml(text).unwrap();
        let error = defs.validate(&[], &[]).unwrap_err().to_string();
        assert!(error.contains("unknown entity \"origin\""), "{error}");
    }
}
