//! Every configuration key is documented in docs/configuration.md.

use ghaf_server::ServerConfig;

fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            // The blob section is documented by example, one per backend kind.
            toml::Value::Table(inner) if key != "blob" => keys(&path, inner, out),
            _ => out.push(path),
        }
    }
}

#[test]
fn every_config_key_is_documented() {
    let rendered = ServerConfig::default().to_redacted_toml();
    let table: toml::Table = toml::from_str(&rendered).expect("rendered config parses");
    let mut all = Vec::new();
    keys("", &table, &mut all);
    assert!(all.len() >= 10, "{all:?}");

    let docs_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let docs = std::fs::read_to_string(docs_path).expect("docs/configuration.md exists");
    for key in all {
        assert!(
            docs.contains(&format!("`{key}`")),
            "config key `{key}` is missing from docs/configuration.md"
        );
    }
}
