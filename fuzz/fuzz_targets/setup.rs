//! The X11 setup-request parser and rewriter: never panics, and what it accepts re-encodes
//! to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xbridge_proto::setup::SetupRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, used))) = SetupRequest::parse(data) {
        assert!(used <= data.len());
        let again = SetupRequest::parse(&request.encode()).unwrap().unwrap().0;
        assert_eq!(again, request);
        let rewritten = request.with_auth(b"MIT-MAGIC-COOKIE-1", &[0xab; 16]).encode();
        let back = SetupRequest::parse(&rewritten).unwrap().unwrap().0;
        assert_eq!(back.byte_order, request.byte_order);
        assert_eq!(back.auth_data, [0xab; 16]);
        let _ = request.failed_reply(&String::from_utf8_lossy(data));
    }
});
