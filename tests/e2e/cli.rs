//! `simple_server`'s command line: a bad flag exits non-zero with a message
//! naming the flag, and never panics.

use std::process::Command;

use crate::support::example;

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--max-concurrent", "0"], "--max-concurrent"),
        (&["--max-concurrent", "many"], "--max-concurrent"),
        (&["--queue-size", "-1"], "--queue-size"),
        (&["--queue-timeout", "0"], "--queue-timeout"),
        (&["--queue-timeout", "-2.5"], "--queue-timeout"),
        (&["--queue-timeout", "NaN"], "--queue-timeout"),
        (&["--transport", "carrier-pigeon"], "--transport"),
        (&["--bind", "localhost"], "--bind"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, flag) in cases {
        let out = Command::new(example("simple_server"))
            .args(*args)
            .output()
            .expect("run simple_server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "nothing on the MCP channel: {args:?}"
        );
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(example("simple_server"))
        .args(["--transport", "http", "--bind", &addr])
        .env("RUST_LOG", "error")
        .output()
        .expect("run simple_server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot bind {addr}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
