use proptest::prelude::*;

use super::*;

fn client(text: &str) -> Result<Parsed, Malformed> {
    parse(text.as_bytes(), From::Client)
}

fn one(text: &str) -> Kind {
    match client(text).unwrap().kinds {
        Shape::One(kind) => kind,
        other => panic!("expected one message, got {other:?}"),
    }
}

fn request(id: RequestId) -> Kind {
    Kind::Request {
        id,
        method: "tools/call".into(),
        name: None,
        params: RequestParams::default(),
    }
}

const RESULT: Answer = Answer::Result { is_error: false };

#[test]
fn ids_compare_by_value() {
    for same in ["1", "1.0", "1e0", "10e-1", "1.000"] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{same},"method":"tools/call"}}"#);
        assert_eq!(one(&text), request(RequestId::int(1)), "{same}");
    }
    assert_eq!(
        one(r#"{"jsonrpc":"2.0","id":-0,"method":"tools/call"}"#),
        request(RequestId::int(0))
    );
    assert_eq!(
        one(r#"{"jsonrpc":"2.0","id":"\u0031","method":"tools/call"}"#),
        request(RequestId::string("1"))
    );
    assert_eq!(
        one(r#"{"jsonrpc":"2.0","id":9007199254740991,"method":"tools/call"}"#),
        request(RequestId::int(MAX_SAFE_INTEGER))
    );
}

#[test]
fn ids_go_upstream_in_their_integer_form() {
    let parsed =
        client(r#"{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"a":1.0}}"#).unwrap();
    assert_eq!(
        parsed.bytes,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a":1.0}}"#
    );
    let parsed = client(
        r#"[{"jsonrpc":"2.0","id":1e1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":-0}}]"#,
    )
    .unwrap();
    assert_eq!(
        parsed.bytes,
        br#"[{"jsonrpc":"2.0","id":10,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0}}]"#
    );
    let string = br#"{"jsonrpc":"2.0","id":"1.0","method":"ping"}"#;
    assert_eq!(parse(string, From::Client).unwrap().bytes, string);
}

#[test]
fn params_follow_mcps_rules() {
    for bad in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{},"_meta":{}}}"#,
    ] {
        assert!(
            matches!(
                client(bad),
                Err(Malformed::Request { id, .. }) if id == RequestId::int(1)
            ),
            "{bad}"
        );
    }
}

#[test]
fn ids_that_are_not_strings_or_safe_integers_are_refused() {
    for bad in [
        "null",
        "1.5",
        "true",
        "[1]",
        "{}",
        "9007199254740992",
        "-9007199254740992",
        "18446744073709551616",
        "1e300",
        "4503599627370495.5",
        r#"{"$serde_json::private::RawValue":"5"}"#,
        r#"{"$serde_json::private::RawValue":"\"a\""}"#,
    ] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{bad},"method":"tools/call"}}"#);
        assert_eq!(client(&text), Err(Malformed::BadId(bad.into())), "{bad}");
    }
}

#[test]
fn the_envelope_is_strict() {
    for bad in [
        r#"{"id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"requestId":2}}"#,
        r#"[]"#,
        r#"3"#,
        r#"[1]"#,
    ] {
        // Refused, under the id where it can be read (see
        // `refusals_carry_the_id_whenever_it_can_be_read`).
        assert!(
            matches!(
                client(bad),
                Err(Malformed::Invalid(_) | Malformed::Request { .. })
            ),
            "{bad}: {:?}",
            client(bad)
        );
    }
    for not_json in [
        "",
        "{",
        "{\"a\":1}x",
        "\u{feff}",
        "\u{feff}\u{feff}{}",
        " \u{feff}{}",
        "{\"a\":\"\t\"}",
    ] {
        assert!(
            matches!(client(not_json), Err(Malformed::NotJson(_))),
            "{not_json:?}"
        );
    }
    assert!(matches!(
        parse(b"{\"a\":\"\xff\"}", From::Client),
        Err(Malformed::NotJson(_))
    ));
}

#[test]
fn a_bare_cr_cannot_smuggle_a_second_message() {
    let line = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{},\"x\":\r{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\"}\r}";
    let parsed = client(line).unwrap();
    assert_eq!(
        parsed.kinds,
        Shape::One(Kind::Notification {
            method: "notifications/x".into(),
            cancels: None,
            task: None,
        })
    );
    assert!(!parsed.bytes.contains(&b'\r'));
    assert_eq!(
        parsed.bytes,
        br#"{"jsonrpc":"2.0","method":"notifications/x","params":{},"x":{"jsonrpc":"2.0","id":2,"method":"tools/call"}}"#
    );
}

#[test]
fn line_separators_inside_strings_are_escaped() {
    let text = "{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":{\"s\":\"a\u{2028}b\u{2029}c\u{85}d \\u2028\"}}";
    let parsed = client(text).unwrap();
    let out = std::str::from_utf8(&parsed.bytes).unwrap();
    assert_eq!(
        out,
        r#"{"jsonrpc":"2.0","method":"n","params":{"s":"a\u2028b\u2029c\u0085d \u2028"}}"#
    );
    let before: Value = serde_json::from_str(text).unwrap();
    let after: Value = serde_json::from_str(out).unwrap();
    assert_eq!(before, after);
}

#[test]
fn client_messages_the_upstream_could_not_parse_are_refused() {
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}{}}}"#,
        "[".repeat(MAX_CLIENT_DEPTH),
        "]".repeat(MAX_CLIENT_DEPTH)
    );
    // Refused under the request's id, which is readable.
    let refused_under_1 = |m: &Result<Parsed, Malformed>| matches!(m, Err(Malformed::Request { id, .. }) if *id == RequestId::int(1));
    assert!(refused_under_1(&client(&deep)));
    for bad in [
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\ud800""#,
        "1e400",
        "-1e999",
    ] {
        let text =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"a":{bad}}}}}"#);
        assert!(refused_under_1(&client(&text)), "{bad}");
        // Not a request: no id to answer under.
        let notification =
            format!(r#"{{"jsonrpc":"2.0","method":"notifications/x","params":{{"a":{bad}}}}}"#);
        assert!(
            matches!(client(&notification), Err(Malformed::Invalid(_))),
            "{bad}"
        );
        // The upstream's own output is routed whatever it holds.
        let response = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"a":{bad}}}}}"#);
        assert!(parse(response.as_bytes(), From::Upstream).is_ok(), "{bad}");
    }
    let pair = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a":"\ud83d\ude00"}}"#;
    assert!(client(pair).is_ok());
}

#[test]
fn upstream_messages_of_any_depth_are_routed() {
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":7,"result":{{"structuredContent":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let parsed = parse(deep.as_bytes(), From::Upstream).unwrap();
    assert_eq!(
        parsed.kinds,
        Shape::One(Kind::Response {
            id: Some(RequestId::int(7)),
            answer: RESULT,
            task: None,
        })
    );
}

#[test]
fn serde_jsons_private_raw_value_key_is_just_an_object() {
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{"$serde_json::private::RawValue":"5"}}}"#;
    // A cancellation's bad requestId is not the id of an answer.
    assert!(matches!(client(cancel), Err(Malformed::Invalid(_))));
    let response = r#"{"jsonrpc":"2.0","id":{"$serde_json::private::RawValue":"5"},"result":{}}"#;
    assert_eq!(
        parse(response.as_bytes(), From::Upstream).unwrap().kinds,
        Shape::One(Kind::Response {
            id: None,
            answer: RESULT,
            task: None,
        })
    );
}

#[test]
fn upstream_messages_are_forwarded_whatever_their_shape() {
    for (text, kind) in [
        ("3", Kind::Other),
        (
            r#"{"id":1,"result":{}}"#,
            Kind::Response {
                id: Some(RequestId::int(1)),
                answer: RESULT,
                task: None,
            },
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            Kind::Response {
                id: Some(RequestId::int(1)),
                answer: Answer::Error {
                    code: None,
                    not_found: false,
                },
                task: None,
            },
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
            Kind::Other,
        ),
        (r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#, Kind::Other),
        (r#"{"jsonrpc":"2.0","method":7}"#, Kind::Other),
        (r#"{"a":1}"#, Kind::Other),
    ] {
        let parsed = parse(text.as_bytes(), From::Upstream).unwrap();
        assert_eq!(parsed.kinds, Shape::One(kind), "{text}");
    }
    // Routing keys twice: peers disagree on which counts; refused both ways.
    let twice = r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{}}"#;
    assert!(parse(twice.as_bytes(), From::Upstream).is_err());
}

#[test]
fn requests_carry_their_name() {
    assert_eq!(
        one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"re\u0070ort","arguments":{"name":"x"}}}"#
        ),
        Kind::Request {
            id: RequestId::int(1),
            method: "tools/call".into(),
            name: Some("report".into()),
            params: RequestParams::default(),
        }
    );
    // Not a string: no name.
    assert_eq!(
        one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#),
        request(RequestId::int(1))
    );
    // Twice: the proxy would key on one and the upstream might run the other.
    assert!(matches!(
        client(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#
        ),
        Err(Malformed::Request { .. })
    ));
}

#[test]
fn responses_say_what_they_answer() {
    for (text, answer) in [
        (r#"{"jsonrpc":"2.0","id":1,"result":{}}"#, RESULT),
        (r#"{"jsonrpc":"2.0","id":1,"result":[]}"#, RESULT),
        (r#"{"jsonrpc":"2.0","id":1,"result":null}"#, RESULT),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
            Answer::Result { is_error: true },
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":false}}"#,
            RESULT,
        ),
        // A refusal in the tool-result dialect from a guarded server or
        // proxy further down: an overload, not the tool's own failure.
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"_meta":{"io.modelcontextprotocol/toolFailure":{"class":"overload","retryable":true}}}}"#,
            Answer::Refused,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"_meta":{"io.modelcontextprotocol/toolFailure":{"class":"capability"}}}}"#,
            Answer::Result { is_error: true },
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":false,"_meta":{"io.modelcontextprotocol/toolFailure":{"class":"overload"}}}}"#,
            RESULT,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"_meta":{"toolFailure":{"class":"overload"}}}}"#,
            Answer::Result { is_error: true },
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":"true"}}"#,
            RESULT,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"x":{"isError":true}}}"#,
            RESULT,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"timed out"}}"#,
            Answer::Error {
                code: Some(-32001),
                not_found: false,
            },
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5}}"#,
            Answer::Error {
                code: None,
                not_found: false,
            },
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"error":"x"}"#,
            Answer::Error {
                code: None,
                not_found: false,
            },
        ),
    ] {
        let Shape::One(Kind::Response { answer: got, .. }) =
            parse(text.as_bytes(), From::Upstream).unwrap().kinds
        else {
            panic!("a response: {text}");
        };
        assert_eq!(got, answer, "{text}");
    }
}

#[test]
fn cancellations_name_their_request() {
    assert_eq!(
        one(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2.0,"reason":"x"}}"#
        ),
        Kind::Notification {
            method: CANCELLED.into(),
            cancels: Some(RequestId::int(2)),
            task: None,
        }
    );
}

#[test]
fn batches_are_classified_element_by_element() {
    let parsed =
        client(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, {"jsonrpc":"2.0","method":"n"}]"#)
            .unwrap();
    assert_eq!(
        parsed.kinds,
        Shape::Batch(vec![
            Kind::Request {
                id: RequestId::int(1),
                method: "ping".into(),
                name: None,
                params: RequestParams::default(),
            },
            Kind::Notification {
                method: "n".into(),
                cancels: None,
                task: None,
            }
        ])
    );
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~\u{85}\u{2028}\u{2029}\r\n\té😀\"\\\\]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\u{2028}\"]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// White space a peer may put between tokens.
fn spaced(text: &str, seed: u64) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut n = seed;
    for c in text.chars() {
        out.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c == '"' {
            in_string = true;
            continue;
        }
        if !matches!(c, '{' | '}' | '[' | ']' | ',' | ':') {
            continue;
        }
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        out.push_str([" ", "\t", "\r", "", "", " \r\n "][(n >> 60) as usize % 6]);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Re-framing keeps the value, removes every line break and separator,
    /// and is idempotent.
    #[test]
    fn reframing_keeps_the_value(params in json_value(), seed in any::<u64>()) {
        let message = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": params}});
        let text = spaced(&serde_json::to_string(&message).unwrap(), seed);
        let parsed = parse(text.as_bytes(), From::Upstream).unwrap();
        let out = std::str::from_utf8(&parsed.bytes).unwrap();
        prop_assert!(!out.contains(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}']), "{}", out);
        // The same numbers as text: both sides go through the same parser.
        let back: Value = serde_json::from_str(out).unwrap();
        let sent: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, sent);
        prop_assert_eq!(&parse(out.as_bytes(), From::Upstream).unwrap().bytes, &parsed.bytes);
        prop_assert_eq!(parsed.kinds, Shape::One(request(RequestId::int(3))));
    }

    /// Whatever the bytes, parsing never panics, and what it accepts is one
    /// line of JSON that parses to the same kinds again.
    #[test]
    fn any_bytes_are_safe(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        for from in [From::Client, From::Upstream] {
            if let Ok(parsed) = parse(&bytes, from) {
                prop_assert!(!parsed.bytes.contains(&b'\n'));
                prop_assert_eq!(parse(&parsed.bytes, from).unwrap(), parsed.clone());
            }
        }
    }
}

/// Every id keeps the text its client wrote (which the proxy's own answers
/// carry back), whatever form of the value it is.
#[test]
fn ids_keep_their_text_as_written() {
    for (written, value) in [
        ("1", RequestId::int(1)),
        ("-5", RequestId::int(-5)),
        ("1.0", RequestId::int(1)),
        ("1e0", RequestId::int(1)),
        ("1E2", RequestId::int(100)),
        ("-0", RequestId::int(0)),
        ("9007199254740991", RequestId::int(MAX_SAFE_INTEGER)),
        (r#""a""#, RequestId::string("a")),
        (r#""\u0041""#, RequestId::string("A")),
        (r#""a\/b""#, RequestId::string("a/b")),
    ] {
        let id = RequestId::parse(written).unwrap();
        assert_eq!(id, value, "{written}");
        assert_eq!(id.written(), written);
        let text = format!(r#"{{"jsonrpc":"2.0","id":{written},"method":"ping"}}"#);
        match one(&text) {
            Kind::Request { id, .. } => assert_eq!(id.written(), written),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(RequestId::int(7).written(), "7");
    assert_eq!(RequestId::string("a\"b").written(), r#""a\"b""#);
}

/// Ids that are numbers or strings are answerable as written even when the
/// proxy refuses them; others are not.
#[test]
fn answerable_ids_are_numbers_and_strings() {
    for yes in [
        "1.5",
        "1e400",
        "-1e-400",
        "9007199254740993",
        "123456789012345678901234567890",
        "0",
        "-0.0",
        r#""x""#,
        r#""\u0041""#,
    ] {
        assert!(answerable_id(yes), "{yes}");
    }
    for no in [
        "null", "true", "[1]", "{}", "01", "1.", ".5", "+1", "1e", "-", "\"x", "",
    ] {
        assert!(!answerable_id(no), "{no}");
    }
    // A refused id is kept as written, to answer under it.
    for bad in ["1.5", "1e400", "9007199254740993", "-9007199254740993"] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{bad},"method":"tools/call"}}"#);
        assert_eq!(client(&text), Err(Malformed::BadId(bad.into())), "{bad}");
    }
}

/// A byte order mark before a message is dropped (rmcp drops one at the
/// start of every line) and not forwarded; a second one, or one after white
/// space, is not JSON.
#[test]
fn a_byte_order_mark_before_a_message_is_dropped() {
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    for from in [From::Client, From::Upstream] {
        let parsed = parse(format!("\u{feff}{call}").as_bytes(), from).unwrap();
        assert_eq!(parsed.bytes, call.as_bytes());
        assert_eq!(parsed, parse(call.as_bytes(), from).unwrap());
    }
}

/// The upstream's answers carry an id back as the client wrote it.
#[test]
fn respelled_ids_replace_only_the_ids_of_responses() {
    let spell = |id: &RequestId| (*id == RequestId::int(1)).then(|| "1.0".to_owned());
    let response = br#"{"jsonrpc":"2.0","id":1,"result":{"id":1}}"#;
    assert_eq!(
        respell_ids(response, spell).unwrap(),
        br#"{"jsonrpc":"2.0","id":1.0,"result":{"id":1}}"#
    );
    let batch = br#"[{"jsonrpc":"2.0","id":2,"result":{}},{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}]"#;
    assert_eq!(
        respell_ids(batch, spell).unwrap(),
        br#"[{"jsonrpc":"2.0","id":2,"result":{}},{"jsonrpc":"2.0","id":1.0,"error":{"code":1,"message":"x"}}]"#
    );
    // A request of the upstream's with that id is not an answer.
    let request = br#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#;
    assert_eq!(respell_ids(request, spell), None);
    assert_eq!(
        respell_ids(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#, spell),
        None
    );
}

/// A client message the proxy does not forward is refused under its id
/// whenever the id can be read (once, a string or a number in range), so the
/// client can match the answer; when it cannot, the answer's id is null.
#[test]
fn refusals_carry_the_id_whenever_it_can_be_read() {
    let under = |text: &str| match client(text) {
        Err(Malformed::Request { id, .. }) => Some(id.written().into_owned()),
        Err(_) => None,
        Ok(parsed) => panic!("{text} passed: {parsed:?}"),
    };
    for (text, id) in [
        (r#"{"jsonrpc":"1.0","id":15,"method":"tools/call"}"#, "15"),
        (r#"{"id":16,"method":"tools/call"}"#, "16"),
        (r#"{"jsonrpc":"2.0","id":"a","method":7}"#, "\"a\""),
        (
            r#"{"jsonrpc":"2.0","id":1.0,"method":"tools/call","method":"ping"}"#,
            "1.0",
        ),
        (
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":"\u0041","method":"ping"}"#,
            "\"\\u0041\"",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"ping","result":{}}"#,
            "3",
        ),
    ] {
        assert_eq!(under(text).as_deref(), Some(id), "{text}");
    }
    for text in [
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","id":{"a":1},"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","method":"ping","method":"x"}"#,
    ] {
        assert_eq!(under(text), None, "{text}");
    }
}
