//! Apply plans: the difference between a set of definitions and what the project stores,
//! printed before anything is written.

use serde::{Deserialize, Serialize};

use crate::definition::{Definitions, Entity, FeatureServiceSpec, FeatureViewSpec};
use crate::store::StoredJoinKey;

/// What applying does to one object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// A new object; for a view, version 1.
    Create,
    /// A view whose keys, source, timestamps or features changed: a new version.
    NewVersion {
        from: i64,
        to: i64,
    },
    /// An edit that keeps the version (description, tags, TTL, online flag) or replaces an
    /// entity or service.
    Update {
        version: Option<i64>,
    },
    Unchanged,
}

/// One planned change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedChange {
    /// `entity`, `feature_view` or `feature_service`.
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub change: Change,
    /// Fields that differ from the stored definition.
    pub fields: Vec<String>,
}

/// The changes an apply makes, in the order it makes them, with the definitions to write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<PlannedChange>,
    /// Stored objects that the definitions do not mention; apply keeps them.
    pub kept: Vec<String>,
    #[serde(skip)]
    pub(crate) entities: Vec<Entity>,
    #[serde(skip)]
    /// Each view with its fingerprint, change and join keys.
    pub(crate) views: Vec<(FeatureViewSpec, String, Change, Vec<StoredJoinKey>)>,
    #[serde(skip)]
    pub(crate) services: Vec<FeatureServiceSpec>,
}

impl Plan {
    /// Whether applying would write nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.change == Change::Unchanged)
    }

    /// Renders the plan as a diff: `+` creates, `~` changes, `=` unchanged.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for change in &self.changes {
            let fields = if change.fields.is_empty() {
                String::new()
            } else {
                format!(" ({})", change.fields.join(", "))
            };
            let line = match &change.change {
                Change::Create if change.kind == "feature_view" => {
                    format!("+ {} {} v1{fields}", change.kind, change.name)
                }
                Change::Create => format!("+ {} {}{fields}", change.kind, change.name),
                Change::NewVersion { from, to } => {
                    format!("~ {} {} v{from} -> v{to}{fields}", change.kind, change.name)
                }
                Change::Update { version: Some(v) } => {
                    format!(
                        "~ {} {} v{v} updated in place{fields}",
                        change.kind, change.name
                    )
                }
                Change::Update { version: None } => {
                    format!("~ {} {} updated{fields}", change.kind, change.name)
                }
                Change::Unchanged => format!("= {} {} unchanged", change.kind, change.name),
            };
            out.push_str(&line);
            out.push('\n');
        }
        for kept in &self.kept {
            out.push_str(&format!("  {kept} is not in the definitions and is kept\n"));
        }
        let changed = self
            .changes
            .iter()
            .filter(|c| c.change != Change::Unchanged)
            .count();
        out.push_str(&format!("{changed} change(s)\n"));
        out
    }
}

/// Names the top-level fields in which two JSON-serialisable definitions differ.
pub(crate) fn changed_fields<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    let mut fields: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

/// Every name the definitions mention, for the list of kept objects.
pub(crate) fn mentions(definitions: &Definitions, kind: &str, name: &str) -> bool {
    match kind {
        "entity" => definitions.entities.iter().any(|e| e.name == name),
        "feature_view" => definitions.feature_views.iter().any(|v| v.name == name),
        _ => definitions.feature_services.iter().any(|s| s.name == name),
    }
}
