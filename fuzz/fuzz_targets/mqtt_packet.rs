//! Whatever bytes an MQTT client sends, the connection's framing never panics out of the codec
//! (rumqttd's own panics are caught and become malformed-packet errors), always makes progress,
//! and topic filters parse or are refused with a reason.
#![no_main]

use std::sync::Once;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tablecast::realtime::TopicFilter;
use tablecast::realtime::mqtt::codec::{Codec, Version, hello};

static QUIET: Once = Once::new();

fuzz_target!(|bytes: &[u8]| {
    // Panics the codec catches are expected; only one escaping it is a failure (and still
    // aborts, through libfuzzer's own catch).
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = hello(bytes);
    for version in [Version::V311, Version::V5] {
        let codec = Codec::new(version, 1 << 16);
        let mut buffer = BytesMut::from(bytes);
        while let Ok(Some(_)) = codec.read(&mut buffer) {}
    }
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(filter) = TopicFilter::parse(text)
    {
        assert_eq!(TopicFilter::parse(&filter.to_string()), Ok(filter.clone()));
        let _ = filter.matches(text);
    }
});
