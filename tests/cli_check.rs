//! `runbookd check` and `serve` refuse a bad config with every problem and its location, and
//! accept the shipped example.

#[test]
fn a_bad_config_stops_start_up_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runbookd.toml");
    std::fs::write(
        &config,
        "[[tokens]]\nname = \"am\"\nrole = \"ingest\"\nsecret_env = \"UNSET_VAR_FOR_TEST\"\n\n\
         [[tokens]]\nname = \"Bad Name\"\nrole = \"admin\"\nsecret_file = \"/nonexistent\"\n",
    )
    .unwrap();
    for command in ["check", "serve"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args([command, "--config"])
            .arg(&config)
            .env_remove("UNSET_VAR_FOR_TEST")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{command} refuses the config");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let at = |line: usize| format!("{}:{line}:1: token", config.display());
        assert!(
            stderr.contains(&at(1)) && stderr.contains("UNSET_VAR_FOR_TEST is not set"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&at(6)) && stderr.contains("the name must be"),
            "{stderr}"
        );
        assert!(
            stderr.contains("cannot read secret_file /nonexistent"),
            "{stderr}"
        );
    }

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["check", "--config"])
        .arg(&config)
        .env("UNSET_VAR_FOR_TEST", "am-secret-0123456789abcdefghijkl")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("UNSET_VAR_FOR_TEST is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains("am-secret"), "no secret in the report");
}

#[test]
fn the_example_config_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("langgraph.token");
    std::fs::write(&secret_file, "langgraph-secret-0123456789abcdef\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/runbookd.toml"
    ))
    .unwrap()
    .replace(
        "/etc/runbookd/langgraph.token",
        secret_file.to_str().unwrap(),
    );
    let config = dir.path().join("runbookd.toml");
    std::fs::write(&config, example).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
        .args(["check", "--config"])
        .arg(&config)
        .env(
            "RUNBOOKD_ALERTMANAGER_SECRET",
            "alertmanager-secret-0123456789abcdef",
        )
        .env_remove("RUNBOOKD_ADMIN_TOKEN")
        .env_remove("RUNBOOKD_INGEST_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 token(s)"), "{stdout}");
    assert!(
        stdout.contains("token alertmanager (ingest)")
            && stdout.contains("token langgraph (agent)"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret-0123456789"), "{stdout}");
}
