#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| questlog_fuzz::event::fuzz_event(data));
