//! URL ids and stored key bytes never panic the decoders, and every accepted key round-trips
//! through the order-preserving encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tablecast::storage::{Key, KeyType};

fuzz_target!(|data: &[u8]| {
    for key_type in [KeyType::Integer, KeyType::String] {
        if let Some(key) = Key::decode(key_type, data) {
            assert_eq!(key.encode(), data);
        }
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(key) = key_type.parse(text)
        {
            assert_eq!(Key::decode(key_type, &key.encode()), Some(key.clone()));
            assert_eq!(key.to_string(), text);
        }
    }
});
