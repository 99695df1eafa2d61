//! The top-level scanner never panics, chunking never changes what it finds,
//! and it agrees with serde_json: on validity (up to the documented
//! exception, a number over `MAX_NUMBER_BYTES` long near `f64::MAX`), and,
//! when serde_json parses an object, on the top-level facts.
#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use mcp_backpressure_cli::wire::scan::{IdScan, MAX_NUMBER_BYTES, TopLevelScanner};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Any JSON value, read as `serde_json::Value` is (same string, number and
/// depth checks) but without its magic: with the `raw_value` feature on,
/// `Value` reads an object whose first key is `$serde_json::private::RawValue`
/// as the JSON text in its string, which no other parser does.
struct Any;

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_str<E>(self, _: &str) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        while seq.next_element::<Any>()?.is_some() {}
        Ok(Any)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        while map.next_key::<String>()?.is_some() {
            map.next_value::<Any>()?;
        }
        Ok(Any)
    }
}

fuzz_target!(|input: &[u8]| {
    let [step, text @ ..] = input else {
        return;
    };
    let mut scanner = TopLevelScanner::new();
    scanner.push(text);
    let whole = scanner.finish();
    let mut scanner = TopLevelScanner::new();
    for chunk in text.chunks(usize::from(*step).max(1)) {
        scanner.push(chunk);
    }
    assert_eq!(scanner.finish(), whole);

    let serde_ok = serde_json::from_slice::<Any>(text).is_ok();
    if serde_ok {
        assert!(whole.is_well_formed(), "{whole:?}");
    } else if whole.is_well_formed() {
        let longest_number = text
            .split(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        assert!(longest_number > MAX_NUMBER_BYTES, "{whole:?}");
    }

    let Ok(map) = serde_json::from_slice::<Map<String, Value>>(text) else {
        return;
    };
    assert!(whole.is_object && !whole.is_array);
    assert_eq!(whole.has_id, map.contains_key("id"));
    assert_eq!(whole.has_method, map.contains_key("method"));
    assert_eq!(whole.has_result, map.contains_key("result"));
    assert_eq!(whole.has_error, map.contains_key("error"));
    for (field, key) in [(&whole.id, "id"), (&whole.method, "method")] {
        match field {
            IdScan::Raw(raw) => {
                let value: Value = serde_json::from_slice(raw).expect("a raw value parses");
                assert_eq!(Some(&value), map.get(key));
            }
            IdScan::TooLong => assert!(map.contains_key(key)),
            IdScan::Absent => assert!(!map.contains_key(key)),
        }
    }
});
