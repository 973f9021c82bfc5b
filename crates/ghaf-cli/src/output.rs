//! Human output (tables and key-value lists) and JSON output.

use clap::ValueEnum;
use comfy_table::{Cell, Table, presets};
use ghaf_client::ApiResponse;

/// Format of command output on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and short sentences for people.
    #[default]
    Table,
    /// The server's JSON response, pretty-printed with its keys in the server's order.
    Json,
}

/// Prints the response body as JSON, or calls `render` with the decoded value for tables.
pub fn emit<T>(format: OutputFormat, response: &ApiResponse<T>, render: impl FnOnce(&T)) {
    match format {
        OutputFormat::Json => print_json(&response.body),
        OutputFormat::Table => render(&response.value),
    }
}

/// Prints a JSON text pretty-printed; prints nothing for an empty body.
pub fn print_json(body: &str) {
    if !body.trim().is_empty() {
        println!("{}", pretty_json(body));
    }
}

/// Builds a table with borderless columns and upper-case headers.
pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(
        headers
            .iter()
            .map(|header| Cell::new(header.to_uppercase())),
    );
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Prints `table`, or `empty_message` on stderr when it has no rows.
pub fn print_table(table: &Table, empty_message: &str) {
    if table.row_count() == 0 {
        eprintln!("{empty_message}");
        return;
    }
    // comfy-table pads every cell to its column's width, including the last one.
    for line in table.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

/// Prints `label: value` lines with the values aligned.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    for (label, value) in fields {
        println!("{:<width$} {value}", format!("{label}:"));
    }
}

/// Returns the value, or `-` when there is none.
pub fn or_dash(value: Option<&str>) -> &str {
    value.filter(|v| !v.is_empty()).unwrap_or("-")
}

pub fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC, the format of the other times
/// in the API.
pub fn format_millis(millis: i64) -> String {
    ghaf_core::format_millis(millis)
}

/// Re-indents a valid JSON text with two spaces per level, keeping key order and every value
/// exactly as written. `serde_json::Value` would sort object keys, so the text is indented
/// token by token instead.
pub fn pretty_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.trim().chars().peekable();

    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(|next| next.is_whitespace()).is_some() {}
                match chars.next_if(|next| matches!(next, '}' | ']')) {
                    Some(close) => out.push(close),
                    None => {
                        depth += 1;
                        push_newline(&mut out, depth);
                    }
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                push_newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                push_newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

fn push_newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_matches_serde_for_sorted_keys() {
        let compact =
            r#"{"a":[1,2,{"b":null,"c":"x, y: {z}"}],"d":{},"e":[],"f":true,"g":-1500.0}"#;
        let value: serde_json::Value = serde_json::from_str(compact).unwrap();
        assert_eq!(
            pretty_json(compact),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }

    #[test]
    fn pretty_json_keeps_numbers_as_written() {
        assert_eq!(pretty_json("[1.5e3,1.0]"), "[\n  1.5e3,\n  1.0\n]");
    }

    #[test]
    fn pretty_json_keeps_key_order() {
        let pretty = pretty_json(r#"{"zeta":1,"alpha":2}"#);
        assert_eq!(pretty, "{\n  \"zeta\": 1,\n  \"alpha\": 2\n}");
    }

    #[test]
    fn pretty_json_keeps_escaped_quotes() {
        let compact = r#"{"message":"say \"hi\" \\","n":[ ]}"#;
        let pretty = pretty_json(compact);
        assert_eq!(
            pretty,
            "{\n  \"message\": \"say \\\"hi\\\" \\\\\",\n  \"n\": []\n}"
        );
        let reparsed: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(
            reparsed,
            serde_json::from_str::<serde_json::Value>(compact).unwrap()
        );
    }

    #[test]
    fn pretty_json_reindents_pretty_input() {
        let input = "{\n    \"a\" : [ 1 ,\n 2 ]\n}\n";
        assert_eq!(pretty_json(input), "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
    }

    #[test]
    fn or_dash_replaces_missing_and_empty() {
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(or_dash(Some("x")), "x");
    }
}
