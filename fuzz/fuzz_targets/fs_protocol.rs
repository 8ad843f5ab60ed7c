//! CoshFS's socket protocol: requests (what the service reads from clients), replies and
//! notices (what clients read from the service). Whatever decodes must encode and decode
//! back to itself.
#![no_main]

use cosh_fs::proto::{Reply, Request, ToClient, decode, encode};
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;

fn round_trip<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + Debug + PartialEq,
{
    if let Ok(value) = decode::<T>(bytes) {
        let mut again = Vec::new();
        encode(&value, &mut again).expect("a decoded message encodes");
        let back: T = postcard::from_bytes(&again).expect("a re-encoded message decodes");
        assert_eq!(back, value, "the message changed on its way round");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data);
    round_trip::<Reply>(data);
    round_trip::<ToClient>(data);
});
