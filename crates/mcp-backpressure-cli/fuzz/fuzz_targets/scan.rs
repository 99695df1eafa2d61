//! The top-level scanner never panics, chunking never changes what it finds,
//! and it agrees with serde_json: on validity (up to the documented
//! exception, a number over `MAX_NUMBER_BYTES` long near `f64::MAX`), and,
//! when serde_json parses an object, on the top-level facts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_backpressure_cli::wire::scan::{IdScan, MAX_NUMBER_BYTES, TopLevelScanner};
use serde_json::{Map, Value};

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

    let serde_ok = serde_json::from_slice::<Value>(text).is_ok();
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
