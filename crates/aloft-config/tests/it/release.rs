//! `[deploy] release_command` and `[deploy.release_command_vm]` as a deploy sends them.

use aloft_config::{Format, SourceFile};

fn config(text: &str) -> aloft_config::AppConfig {
    let parsed = aloft_config::parse(SourceFile::new(
        "fly.toml".to_owned(),
        text.to_owned(),
        Format::Toml,
    ));
    assert!(!parsed.has_errors(), "{}", parsed.render());
    parsed.config().expect("valid").clone()
}

#[test]
fn release_command_vm_sizes_the_release_command_machine() {
    let sized = config(
        r#"
app = "web"
[deploy]
release_command = "bin/migrate --all"
[deploy.release_command_vm]
size = "shared-cpu-2x"
memory = "1gb"
"#,
    );
    assert_eq!(
        sized.release_command().unwrap(),
        Some(vec!["bin/migrate".to_owned(), "--all".to_owned()])
    );
    let guest = sized.release_command_guest().unwrap().expect("a guest");
    assert_eq!((guest.cpus, guest.memory_mb), (2, 1024));

    // Without it, the command runs with the release's own size.
    let unsized_ = config("app = \"web\"\n[deploy]\nrelease_command = \"migrate\"\n");
    assert_eq!(unsized_.release_command_guest().unwrap(), None);

    // A size that does not exist is an error that names the key, the value and the line.
    let wrong = aloft_config::parse(SourceFile::new(
        "fly.toml".to_owned(),
        "app = \"web\"\n[deploy.release_command_vm]\nsize = \"huge-cpu-9x\"\n".to_owned(),
        Format::Toml,
    ));
    assert!(wrong.has_errors());
    let shown = wrong.render();
    assert!(
        shown.contains("deploy.release_command_vm.size: unknown VM size \"huge-cpu-9x\"")
            && shown.contains("fly.toml:3:8"),
        "{shown}"
    );
}
