//! Message classification and re-framing (see `wire::fuzz_classify`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    mcp_backpressure_cli::wire::fuzz_classify(input);
});
