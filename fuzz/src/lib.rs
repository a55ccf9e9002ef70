//! The decoders under fuzzing, compiled from questlog's own sources (the same files, not
//! copies): `event` (validation of JSON and query-parameter events, with `schema`, which
//! its registered types are compiled from) and `log` (block
//! decoding). Each target calls the module's `fuzz_*` function, which the main crate's
//! `tests/fuzz_corpus.rs` also runs over the committed corpus.
#![allow(dead_code)]

#[path = "../../src/event/mod.rs"]
pub mod event;
#[path = "../../src/schema/mod.rs"]
pub mod schema;
#[path = "../../src/log/mod.rs"]
pub mod log;
