//! The endpoint parser: never panics, and what it accepts prints back to an equal endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xbridge_proto::Endpoint;

fuzz_target!(|text: &str| {
    if let Ok(endpoint) = text.parse::<Endpoint>() {
        assert_eq!(endpoint.to_string().parse::<Endpoint>().unwrap(), endpoint);
    }
});
