//! Property test of the readers: arbitrary bytes, and CSV-like text built from risky pieces,
//! fed to each reader end that ingests a file. Every input must end in a version, an error or
//! a policy rejection; a panic fails the test.

mod common;

use ghaf_ingest::{InputFormat, ReadOptions};
use proptest::prelude::*;

const SCHEMA: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: name, type: string, pattern: "^[a-z]*$"}
  - {name: at, type: timestamp}
  - {name: ok, type: boolean}
unique_key: [id]
acceptance: {max_failure_share: 0.5}
"#;

fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"id,name,at,ok\n".to_vec()),
        Just(b",".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"NA".to_vec()),
        Just(b"1".to_vec()),
        Just(b"-9223372036854775809".to_vec()),
        Just(b"2024-02-30T25:00:00Z".to_vec()),
        Just(b"2024-01-01T00:00:00+04:00".to_vec()),
        Just(b"true".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"{\"id\": 1}".to_vec()),
        Just(b"\x00".to_vec()),
        "[a-z]{0,8}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..400), csv_like()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn readers_never_panic(content in any_input(), format in 0..3usize, header: bool) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let h = common::harness().await;
            h.create("fuzz", SCHEMA).await;
            let format = [InputFormat::Csv, InputFormat::Ndjson, InputFormat::Parquet][format];
            let options = ReadOptions {
                header,
                max_field_bytes: 64,
                batch_rows: 7,
                ..ReadOptions::new(format)
            };
            let path = h.write("input", &content);
            // Any result is acceptable; only a panic fails.
            let _ = h.ingest("fuzz", &path, &options).await;
        });
    }
}
