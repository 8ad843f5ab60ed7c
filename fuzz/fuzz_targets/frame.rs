//! Any bytes as one frame of the client or peer protocol (header included).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cosh_fuzz::check_frame(data);
});
