//! The display-manager argument translator, fed NUL-separated argv.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xbridge_guest_xwrap::args::translate;

fuzz_target!(|data: &[u8]| {
    let argv: Vec<String> = data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if let Ok(dm) = translate(&argv) {
        for arg in dm.passthrough.iter().chain(&dm.dropped) {
            assert!(argv.contains(arg));
        }
    }
});
