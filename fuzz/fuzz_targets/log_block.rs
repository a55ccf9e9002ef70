#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| questlog_fuzz::log::fuzz_block(data));
