//! Any bytes, read as fly.toml in each format, then validated, lowered and shown: nothing
//! may panic.

#![no_main]

use aloft_config::{Format, SourceFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Toml, Format::Json, Format::Yaml] {
        let parsed = aloft_config::parse(SourceFile::new("fuzz", text, format));
        let _ = parsed.render();
        if let Some(config) = parsed.config() {
            for group in config.process_groups() {
                let _ =
                    config.to_machine_config(&group, std::path::Path::new("/nonexistent"), None);
            }
            let _ = aloft_config::show::to_string(config, format);
        }
    }
});
