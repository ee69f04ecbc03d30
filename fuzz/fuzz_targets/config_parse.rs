//! Configuration loading (`config::Config::parse`, SPEC 2) on arbitrary text.
//!
//! Checks: no panic, whatever the text (numbers out of range, odd durations, addresses,
//! URLs, nesting); an error prints; a configuration that loads can be asked for its
//! warnings. The environment variables a config may name (`secret_env`, `password_env`)
//! are simply absent here, which is one more error path.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sesrelay::config::Config;

fuzz_target!(|text: &str| {
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let _ = config.warnings();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
