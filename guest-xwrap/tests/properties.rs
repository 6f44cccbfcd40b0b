//! Property test: argument translation takes any argv a display manager might pass, never
//! panics, and invents nothing.

use proptest::prelude::*;
use xbridge_guest_xwrap::args::translate;

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(":0".to_owned()),
        Just("-auth".to_owned()),
        Just("-displayfd".to_owned()),
        Just("-verbose".to_owned()),
        Just("-logfile".to_owned()),
        Just("-keeptty".to_owned()),
        Just("vt7".to_owned()),
        Just("-nolisten".to_owned()),
        Just("tcp".to_owned()),
        Just("3".to_owned()),
        "\\PC{0,12}",
    ]
}

proptest! {
    #[test]
    fn translate_never_panics_and_invents_nothing(argv in proptest::collection::vec(token(), 0..20)) {
        if let Ok(dm) = translate(&argv) {
            let kept = dm.passthrough.len() + dm.dropped.len();
            let taken = usize::from(dm.display.is_some()) + 2 * usize::from(dm.displayfd.is_some());
            prop_assert!(kept + taken <= argv.len());
            for arg in dm.passthrough.iter().chain(&dm.dropped) {
                prop_assert!(argv.contains(arg), "{arg:?} was not in {argv:?}");
            }
        }
    }
}
