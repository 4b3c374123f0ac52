//! Feeds arbitrary bytes to the decoder as a stream for each protocol version.
//!
//! Beyond "no panic", every packet the decoder accepts must re-encode, and decoding that
//! encoding must give the same packet back: the decoder never accepts what it cannot represent.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern::codec::{decode, encode, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, version, 64 * 1024) {
            // CONNECT encodes for the version it names; everything else for the connection's.
            let mut encoded = BytesMut::new();
            encode(&packet, version, &mut encoded).expect("a decoded packet re-encodes");
            let again = decode(&mut encoded, version, usize::MAX)
                .expect("a re-encoded packet decodes")
                .expect("a re-encoded packet is complete");
            assert_eq!(again, packet);
        }
    }
});
