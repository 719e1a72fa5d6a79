//! Fuzzes the timer wheel against its reference model: the input bytes choose the wheel's shape
//! and a sequence of insert / cancel / advance ops; every step asserts the two agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringws::timer::reference::run_bytes(data);
});
