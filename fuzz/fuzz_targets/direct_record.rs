//! The fixed-layout records clients write on direct rings (transfers, markers, inline
//! transfers).
#![no_main]

use cosh_proto::ops::{decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode_record(data) {
        let again = encode_record(&record).expect("a decoded record encodes");
        assert_eq!(
            again, data,
            "accepted a record that is not in its one layout"
        );
    }
});
