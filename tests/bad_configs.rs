//! Every file in tests/bad_configs/ is refused with exactly the error in its `.expected`
//! file: file, line, column, key and message.

use std::path::Path;

use sesrelay::config::Config;

#[test]
fn each_bad_config_gives_its_exact_error() {
    let dir = Path::new("tests/bad_configs");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/bad_configs exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    let mut failures = Vec::new();
    for path in entries {
        let expected_path = path.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        match Config::load(&path) {
            Ok(_) => failures.push(format!("{}: loaded, but should fail", path.display())),
            Err(e) => {
                let got = e.to_string();
                if got != expected.trim_end() {
                    failures.push(format!(
                        "{}:\n  expected: {}\n  got:      {got}",
                        path.display(),
                        expected.trim_end()
                    ));
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} bad configs found");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_shipped_config_is_valid_and_warns_about_its_deleted_set() {
    let config = Config::load(Path::new("config/sesrelay.toml")).expect("shipped config loads");
    assert_eq!(
        config.warnings(),
        [
            "identity legacy.example.org: default configuration set retired does not exist \
          (deleted set); mail that resolves to it is rejected with 554 5.3.0"
        ]
    );
}
