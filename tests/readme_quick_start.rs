//! The README's quick start ("Trying it"), run as written with `sh`, `curl` and `openssl`: the
//! block after the `quick-start` marker, in a fresh directory holding what its build step makes
//! (`target/release/runbookd`, the binary under test) and the fixture it posts. The only edits:
//! the `cargo build` line is left out (the binary is already built), and port 8080 becomes a
//! free one. Each comment line that shows output must match a line the commands printed (`...`
//! stands for anything), and the block's last command, run again until the run ends, must show
//! what its "within a minute" comment lists. So the test fails when the README drifts.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The shell block after the `quick-start` marker in README.md.
fn quick_start() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split("<!-- quick-start")
        .nth(1)
        .expect("README has the quick-start marker");
    let block = after.split("```sh\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

/// Kills the script's process group (the service it started in the background) when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-s", "TERM", "--", &format!("-{}", self.0)])
            .status();
    }
}

/// Whether one line of `output` holds every `...`-separated piece of `shown`, in order.
fn shows(output: &str, shown: &str) -> bool {
    output.lines().any(|line| {
        let mut rest = line;
        shown.split("...").map(str::trim).all(|piece| {
            rest.find(piece)
                .map(|at| rest = &rest[at + piece.len()..])
                .is_some()
        })
    })
}

#[tokio::test]
async fn the_readme_quick_start_runs_as_written_and_shows_what_it_says() {
    let block = quick_start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    symlink(
        env!("CARGO_BIN_EXE_runbookd"),
        dir.path().join("target/release/runbookd"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        dir.path().join("tests/fixtures"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let lines: Vec<&str> = block.lines().collect();
    assert_eq!(
        lines[0], "cargo build --release",
        "the block starts by building"
    );
    let commands: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let last = commands.last().unwrap().split("  #").next().unwrap().trim();
    let (finally, shown): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .filter_map(|l| l.strip_prefix("# "))
        .partition(|l| l.starts_with("within a minute: "));
    let finally: Vec<&str> = finally[0]
        .trim_start_matches("within a minute: ")
        .split(", ")
        .collect();
    // The last command, again, until the run has ended (bounded), as a reader would.
    let again = format!(
        "for attempt in $(seq 120); do\n\
           case \"$({last} | head -n 1)\" in *' resolved'*|*' escalated'*) break ;; esac\n\
           sleep 1\n\
         done\n\
         echo '=== once the run ended ==='\n\
         {last}\n"
    );
    let script = format!("{}\n{again}", lines[1..].join("\n")).replace("8080", &port.to_string());

    let child = Command::new("sh")
        .args(["-e", "-c", &script])
        .current_dir(dir.path())
        .env_remove("RUNBOOKD_CONFIG")
        .env_remove("RUNBOOKD_DB")
        .env_remove("RUNBOOKD_URL")
        .env_remove("RUNBOOKD_TOKEN")
        .env_remove("RUNBOOKD_ADMIN_TOKEN")
        .env_remove("RUNBOOKD_LISTEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _group = Group(child.id().unwrap());
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the quick start finishes within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = std::fs::read_to_string(dir.path().join("runbookd.log")).unwrap_or_default();
    let context = format!("{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- log\n{log}");
    assert!(output.status.success(), "{context}");

    let (before, after) = stdout
        .split_once("=== once the run ended ===")
        .unwrap_or_else(|| panic!("{context}"));
    for line in shown {
        assert!(shows(before, line), "the README shows `{line}`:\n{context}");
    }
    let first = after.trim_start().lines().next().unwrap_or_default();
    assert!(first.ends_with(" resolved"), "{first}\n{context}");
    for word in finally {
        assert!(
            after.contains(word),
            "`{word}` once the run ended:\n{context}"
        );
    }
    assert!(!stdout.contains('\x1b'), "no colour to a pipe:\n{context}");
}
