//! Binary encoding of stored online rows in the embedded store.
//!
//! A read decodes every row it returns, so the encoding avoids text: numbers are stored as
//! their eight little-endian bytes and names and strings with a length in front. Layout:
//!
//! ```text
//! u8   FORMAT (1)
//! i64  event time, microseconds
//! i64  created time, microseconds
//! u32  value count
//! per value, in name order:
//!   u16 name length, name bytes (UTF-8)
//!   u8  tag, then the payload:
//!       0 null | 1 false | 2 true | 3 i64 | 4 u64 | 5 f64 (8 bytes each)
//!       6 string: u32 length, UTF-8 bytes
//!       7 array or object: u32 length, its JSON text
//! ```
//!
//! Integers are little-endian. Rows written before this encoding are JSON objects, whose
//! first byte is `{`; [`decode`] reads both.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Number, Value};

use super::{OnlineRow, PickedRow};
use crate::FeatureError;

const FORMAT: u8 = 1;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const UINT: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const JSON: u8 = 7;

/// Appends the encoding of `row` to `out`. Fails only for a feature name longer than
/// 65,535 bytes or a value longer than 4 GiB, which no validated definition or row has.
pub fn encode_into(row: &OnlineRow, out: &mut Vec<u8>) -> Result<(), FeatureError> {
    out.push(FORMAT);
    out.extend_from_slice(&row.event_micros.to_le_bytes());
    out.extend_from_slice(&row.created_micros.to_le_bytes());
    out.extend_from_slice(&count::<u32>(row.values.len())?.to_le_bytes());
    for (name, value) in &row.values {
        out.extend_from_slice(&length::<u16>(name.len(), "feature name")?.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        match value {
            Value::Null => out.push(NULL),
            Value::Bool(false) => out.push(FALSE),
            Value::Bool(true) => out.push(TRUE),
            Value::Number(number) => {
                if let Some(int) = number.as_i64() {
                    out.push(INT);
                    out.extend_from_slice(&int.to_le_bytes());
                } else if let Some(uint) = number.as_u64() {
                    out.push(UINT);
                    out.extend_from_slice(&uint.to_le_bytes());
                } else {
                    // A JSON number that is neither integer is a finite f64.
                    out.push(FLOAT);
                    let float = number.as_f64().unwrap_or(f64::NAN);
                    out.extend_from_slice(&float.to_le_bytes());
                }
            }
            Value::String(text) => {
                out.push(STRING);
                out.extend_from_slice(&length::<u32>(text.len(), "string value")?.to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            Value::Array(_) | Value::Object(_) => {
                let text = serde_json::to_vec(value).map_err(|error| corrupt(error.to_string()))?;
                out.push(JSON);
                out.extend_from_slice(&length::<u32>(text.len(), "value")?.to_le_bytes());
                out.extend_from_slice(&text);
            }
        }
    }
    Ok(())
}

/// Decodes a stored row: the binary encoding, or the JSON of rows written before it.
pub fn decode(bytes: &[u8]) -> Result<OnlineRow, FeatureError> {
    match bytes.first() {
        Some(&FORMAT) => Reader { bytes }.row(),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|error| corrupt(error.to_string())),
        Some(other) => Err(corrupt(format!("unknown row format byte {other}"))),
        None => Err(corrupt("the row is empty".to_owned())),
    }
}

/// Decodes the values of requested features from stored rows, in request order. Values of
/// other features are skipped without being decoded.
///
/// Rows of one view version usually store the same names in the same order. The picker
/// therefore remembers the name at each place of the last row and where its value went (or
/// that it was not requested), so a name seen at that place before costs one comparison.
pub struct Picker<'f> {
    features: &'f [&'f str],
    /// First requested position of each requested name.
    positions: HashMap<&'f [u8], usize>,
    /// For each requested position, the first position with the same name.
    first_of: Vec<usize>,
    /// For each place in a row, the name last seen there and the requested position of its
    /// value, if any.
    seen: Vec<(Vec<u8>, Option<usize>)>,
}

impl<'f> Picker<'f> {
    pub fn new(features: &'f [&'f str]) -> Self {
        let mut positions = HashMap::with_capacity(features.len());
        let first_of = features
            .iter()
            .enumerate()
            .map(|(position, feature)| *positions.entry(feature.as_bytes()).or_insert(position))
            .collect();
        Picker {
            features,
            positions,
            first_of,
            seen: Vec::new(),
        }
    }

    /// Decodes the requested values of one stored row: the binary encoding, or the JSON of
    /// rows written before it.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<PickedRow, FeatureError> {
        let mut picked = match bytes.first() {
            Some(&FORMAT) => self.decode_binary(bytes)?,
            _ => return decode(bytes).map(|row| PickedRow::pick(&row, self.features)),
        };
        // A feature requested twice gets the value at each position.
        for (position, &first) in self.first_of.iter().enumerate() {
            if first != position {
                picked.values[position] = picked.values[first].clone();
            }
        }
        Ok(picked)
    }

    fn decode_binary(&mut self, bytes: &[u8]) -> Result<PickedRow, FeatureError> {
        let mut reader = Reader { bytes };
        let (event_micros, created_micros, count) = reader.header()?;
        let mut values = vec![None; self.features.len()];
        for place in 0..count as usize {
            let (name, tag) = reader.name_and_tag()?;
            let position = match self.seen.get(place) {
                Some((seen, position)) if seen.as_slice() == name => *position,
                _ => {
                    let found = self.positions.get(name).copied();
                    if self.seen.len() <= place {
                        self.seen.resize(place + 1, (Vec::new(), None));
                    }
                    self.seen[place] = (name.to_vec(), found);
                    found
                }
            };
            match position {
                Some(position) => values[position] = Some(reader.value(tag)?),
                None => reader.skip(tag)?,
            }
        }
        reader.finish()?;
        Ok(PickedRow {
            event_micros,
            created_micros,
            values,
        })
    }
}

fn corrupt(message: String) -> FeatureError {
    FeatureError::Corrupt {
        what: "online row",
        message,
    }
}

fn count<T: TryFrom<usize>>(count: usize) -> Result<T, FeatureError> {
    T::try_from(count).map_err(|_| FeatureError::InvalidArgument {
        argument: "rows",
        message: format!("a row of {count} values is too many for the online store"),
    })
}

fn length<T: TryFrom<usize>>(len: usize, item: &str) -> Result<T, FeatureError> {
    T::try_from(len).map_err(|_| FeatureError::InvalidArgument {
        argument: "rows",
        message: format!(
            "a {item} of {len} bytes is too long for the online store; shorten it or leave it \
             out of the view"
        ),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], FeatureError> {
        if self.bytes.len() < len {
            return Err(corrupt(format!(
                "the row ends {} bytes early",
                len - self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FeatureError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn text(&mut self, len: usize) -> Result<String, FeatureError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|error| corrupt(format!("a name or string is not UTF-8: {error}")))
    }

    /// Reads the format byte and the two times, and returns them with the value count.
    fn header(&mut self) -> Result<(i64, i64, u32), FeatureError> {
        self.take(1)?;
        let event_micros = i64::from_le_bytes(self.array()?);
        let created_micros = i64::from_le_bytes(self.array()?);
        let count = u32::from_le_bytes(self.array()?);
        Ok((event_micros, created_micros, count))
    }

    /// Reads a value's name bytes and tag.
    fn name_and_tag(&mut self) -> Result<(&'a [u8], u8), FeatureError> {
        let name_len = u16::from_le_bytes(self.array()?);
        let name = self.take(usize::from(name_len))?;
        let [tag] = self.array()?;
        Ok((name, tag))
    }

    /// Reads the payload of a value with `tag`.
    fn value(&mut self, tag: u8) -> Result<Value, FeatureError> {
        Ok(match tag {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::from(i64::from_le_bytes(self.array()?)),
            UINT => Value::from(u64::from_le_bytes(self.array()?)),
            FLOAT => {
                let float = f64::from_le_bytes(self.array()?);
                Number::from_f64(float)
                    .map(Value::Number)
                    .ok_or_else(|| corrupt(format!("value {float} is not a finite number")))?
            }
            STRING => {
                let len = u32::from_le_bytes(self.array()?);
                Value::String(self.text(len as usize)?)
            }
            JSON => {
                let len = u32::from_le_bytes(self.array()?);
                serde_json::from_slice(self.take(len as usize)?)
                    .map_err(|error| corrupt(error.to_string()))?
            }
            other => return Err(corrupt(format!("unknown value tag {other}"))),
        })
    }

    /// Moves past the payload of a value with `tag`.
    fn skip(&mut self, tag: u8) -> Result<(), FeatureError> {
        let len = match tag {
            NULL | FALSE | TRUE => 0,
            INT | UINT | FLOAT => 8,
            STRING | JSON => u32::from_le_bytes(self.array()?) as usize,
            other => return Err(corrupt(format!("unknown value tag {other}"))),
        };
        self.take(len).map(|_| ())
    }

    fn finish(&self) -> Result<(), FeatureError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(corrupt(format!(
                "{} bytes follow the last value",
                self.bytes.len()
            )))
        }
    }

    fn row(mut self) -> Result<OnlineRow, FeatureError> {
        let (event_micros, created_micros, count) = self.header()?;
        let mut values = BTreeMap::new();
        for _ in 0..count {
            let (name, tag) = self.name_and_tag()?;
            let name = std::str::from_utf8(name)
                .map_err(|error| corrupt(format!("a feature name is not UTF-8: {error}")))?
                .to_owned();
            values.insert(name, self.value(tag)?);
        }
        self.finish()?;
        Ok(OnlineRow {
            event_micros,
            created_micros,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(values: Value) -> OnlineRow {
        OnlineRow {
            event_micros: 1_767_225_600_000_000,
            created_micros: i64::MIN,
            values: serde_json::from_value(values).unwrap(),
        }
    }

    fn round_trip(row: &OnlineRow) -> OnlineRow {
        let mut bytes = Vec::new();
        encode_into(row, &mut bytes).unwrap();
        decode(&bytes).unwrap()
    }

    #[test]
    fn every_value_kind_round_trips() {
        let row = row(json!({
            "null": null,
            "no": false,
            "yes": true,
            "negative": -42,
            "large": u64::MAX,
            "min": i64::MIN,
            "max": i64::MAX,
            "above_max": i64::MAX as u64 + 1,
            "negative_zero": -0.0,
            "float": 0.1,
            "tiny": 5e-324,
            "whole_float": 3.0,
            "text": "JFK ✈ \"quoted\"",
            "empty": "",
            "list": [1, 2.5, "x"],
            "object": {"a": [null]},
        }));
        let back = round_trip(&row);
        assert_eq!(back, row);
        // Exact bits, and a float that is whole stays a float in the JSON output.
        assert_eq!(back.values["float"].as_f64(), Some(0.1));
        assert_eq!(back.values["whole_float"].to_string(), "3.0");
        assert_eq!(back.values["negative"].to_string(), "-42");
        assert_eq!(back.values["min"].as_i64(), Some(i64::MIN));
        assert_eq!(back.values["above_max"].as_u64(), Some(i64::MAX as u64 + 1));
        let zero = back.values["negative_zero"].as_f64().unwrap();
        assert_eq!(zero, 0.0);
        assert!(zero.is_sign_negative());
    }

    #[test]
    fn rows_written_as_json_still_decode() {
        let row = row(json!({"f0": 1.5, "cnt": 3}));
        let json = serde_json::to_vec(&row).unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(decode(&json).unwrap(), row);
    }

    #[test]
    fn picked_values_come_in_request_order() {
        let row = row(json!({"a": 1, "b": "two", "c": [3], "d": null, "e": 5.5}));
        let mut bytes = Vec::new();
        encode_into(&row, &mut bytes).unwrap();
        let json = serde_json::to_vec(&row).unwrap();
        let features = ["e", "missing", "b", "d", "e"];
        let expected = PickedRow {
            event_micros: row.event_micros,
            created_micros: row.created_micros,
            values: vec![
                Some(json!(5.5)),
                None,
                Some(json!("two")),
                Some(json!(null)),
                Some(json!(5.5)),
            ],
        };

        let mut picker = Picker::new(&features);
        // The second decode of each uses the names the first one saw.
        for _ in 0..2 {
            assert_eq!(picker.decode(&bytes).unwrap(), expected);
            assert_eq!(picker.decode(&json).unwrap(), expected);
        }
        assert_eq!(PickedRow::pick(&row, &features), expected);

        // A row with other names at the same places is still picked by name.
        let other = super::OnlineRow {
            values: serde_json::from_value(json!({"b": 2, "e": 7})).unwrap(),
            ..row.clone()
        };
        let mut other_bytes = Vec::new();
        encode_into(&other, &mut other_bytes).unwrap();
        let picked = picker.decode(&other_bytes).unwrap();
        assert_eq!(
            picked.values,
            vec![Some(json!(7)), None, Some(json!(2)), None, Some(json!(7))]
        );
    }

    #[test]
    fn damaged_rows_are_corrupt() {
        let mut bytes = Vec::new();
        encode_into(&row(json!({"f0": 1.5, "name": "x"})), &mut bytes).unwrap();
        for len in [0, 1, 9, bytes.len() - 1] {
            let error = decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(error, FeatureError::Corrupt { .. }),
                "{len}: {error}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().to_string().contains("follow"));
        let mut unknown = bytes.clone();
        unknown[0] = 9;
        assert!(
            decode(&unknown)
                .unwrap_err()
                .to_string()
                .contains("format byte 9")
        );

        // Truncation inside a value the picker skips is caught as well.
        let mut picker = Picker::new(&["f0"]);
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            picker.decode(cut).unwrap_err(),
            FeatureError::Corrupt { .. }
        ));
    }
}
