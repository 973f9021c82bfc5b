//! The feature store of Ghaf: entities, feature views and feature services declared in YAML or
//! JSON; versions of each view; point-in-time training sets built with an as-of join over
//! dataset versions; materialisation into an online store (embedded redb or Redis); and online
//! reads with a status per value.

mod apply;
mod asof;
pub mod definition;
mod error;
pub mod expr;
pub mod online;
mod push;
mod service;
pub mod store;
mod table_cache;
mod training;
mod value;
mod view;
mod window;

pub use apply::{Change, Plan, PlannedChange};
pub use asof::AsOfIndex;
pub use definition::{
    AggregateFunction, Aggregation, Definitions, Entity, FeatureRef, FeatureServiceSpec,
    FeatureSpec, FeatureViewSpec, KeyType, SourceRef, parse_duration,
};
pub use error::FeatureError;
pub use push::PushTarget;
pub use service::{
    EntitySource, FeatureSelection, FeatureStore, LoadedView, MaterializeOutcome, OnlineColumn,
    OnlineMetadata, OnlinePush, OnlineRequest, OnlineResponse, PushReport, Registry, RejectedRow,
    TrainingSetOutcome, TrainingSetRequest, format_micros,
};
pub use store::{FeatureDb, Materialization, StoredJoinKey, StoredView};
pub use table_cache::{TableCache, TableKey};
pub use training::{DEFAULT_TIMESTAMP_COLUMN, ViewSelection, point_in_time_join, timestamp_column};
pub use value::json_value;
pub use view::{CompiledFeature, CompiledView, FeatureTable, JoinKey, cast_keys, micros};
pub use window::rolling;
