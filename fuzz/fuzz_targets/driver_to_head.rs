//! What the head reads from an authenticated driver, and the checks it applies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sunray_proto::{decode, limits, DriverToHead};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode::<DriverToHead>(data) {
        let _ = limits::check_driver_message(7, &m);
        if let DriverToHead::Submit(specs) = &m {
            for s in specs {
                let _ = limits::check_request(&s.resources);
            }
        }
    }
});
