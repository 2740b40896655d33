//! The config reader (`portier::config::parse`): never panics, and every problem names a
//! line of the input (1-based; a file ending in a newline has an empty last line) and a
//! message.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match portier::config::parse(text, "f.toml") {
        Ok(config) => {
            let _ = portier::config::warnings(&config);
        }
        Err(e) => {
            let problems = e.problems();
            assert!(!problems.is_empty(), "an error without problems");
            for p in problems {
                assert!(
                    (1..=lines).contains(&p.line),
                    "line {} of {lines}: {p}",
                    p.line
                );
                assert_eq!(p.file, "f.toml");
                assert!(!p.message.is_empty(), "{p:?}");
            }
            assert!(problems.is_sorted_by_key(|p| p.line));
            let _ = e.to_string();
        }
    }
});
