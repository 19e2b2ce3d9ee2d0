//! The child <-> master channel decoder: any bytes, cut anywhere, never
//! panic, and the same messages whatever the cut. The same bytes as the
//! first ones on the attach socket: a hello or a refusal, never a panic,
//! and a prefix of a good hello is never refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let whole = flare::fuzzing::channel_messages(data, &[]);
    let split = flare::fuzzing::channel_messages(data, &[cut as usize]);
    assert_eq!(whole, split);
    let hello = flare::fuzzing::attach_hello(data);
    if hello.starts_with("Ok(Done") {
        let prefix = flare::fuzzing::attach_hello(&data[..(cut as usize).min(data.len())]);
        assert!(!prefix.starts_with("Err"), "{prefix} for a prefix of {hello}");
    }
});
