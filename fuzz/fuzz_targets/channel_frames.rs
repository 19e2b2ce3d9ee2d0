//! The child <-> master channel decoder: any bytes, cut anywhere, never
//! panic, and the same messages whatever the cut.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let whole = flare::fuzzing::channel_messages(data, &[]);
    let split = flare::fuzzing::channel_messages(data, &[cut as usize]);
    assert_eq!(whole, split);
});
