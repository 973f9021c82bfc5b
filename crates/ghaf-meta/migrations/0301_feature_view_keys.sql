-- The join keys of each feature view version: entity name, key column and type, as JSON.
-- A version then keeps the keys it was applied with even if an entity is re-declared later.
-- Versions stored before this migration have NULL and use the current entities.
ALTER TABLE feature_view_versions ADD COLUMN join_keys_json TEXT;
