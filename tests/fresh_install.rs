//! The test set-up on a fresh machine: `scripts/install-test-deps.sh` runs in a fresh Debian
//! bookworm container (the locally built base image, where none of the packages is installed)
//! that ships `/usr/sbin/policy-rc.d` as this machine image does. It must exit 0, say what it
//! installs and why, install everything the tests use (Debian's kubectl renders the
//! kustomizations), leave sshd disabled at boot, leave policy-rc.d as it was, and do nothing on
//! a second run. Downloaded packages are cached under target/apt-archives between runs.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs in the container, after the install script; each line is checked by the test.
const AFTER: &str = r#"
echo "rc=$first"
second=$(/src/scripts/install-test-deps.sh 2>&1); echo "second rc=$? output=[$second]"
echo "ssh at boot: $(systemctl is-enabled ssh.service)"
[ -x /usr/sbin/policy-rc.d ] && echo "policy-rc.d kept"
for f in /usr/bin/prometheus-alertmanager /usr/sbin/sshd /usr/bin/ssh /usr/bin/curl /usr/bin/script \
         /usr/bin/chromium /usr/bin/chromedriver /usr/bin/podman /usr/sbin/runc /usr/sbin/debootstrap \
         /usr/bin/kubectl /usr/bin/systemd-analyze /usr/bin/promtool; do
  [ -e "$f" ] || echo "missing $f"
done
cd /src && kubectl kustomize deploy/kubernetes/overlays/estate >/dev/null && echo "kustomize ok"
"#;

#[test]
fn install_test_deps_sets_up_a_fresh_debian_and_says_what_it_installs() {
    let conf = root().join("scripts/podman-containers.conf");
    let base = Command::new(root().join("scripts/base-image.sh"))
        .env("CONTAINERS_CONF", &conf)
        .status()
        .unwrap();
    assert!(base.success(), "scripts/base-image.sh failed");
    let cache = root().join("target/apt-archives");
    std::fs::create_dir_all(cache.join("partial")).unwrap();
    let script = format!(
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d\n\
         /src/scripts/install-test-deps.sh 2>/tmp/install.log; first=$?\n\
         cat /tmp/install.log\n{AFTER}"
    );
    let output = Command::new("podman")
        .args(["--runtime", "runc", "run", "--rm", "--volume"])
        .arg(format!("{}:/src:ro", root().display()))
        .arg("--volume")
        .arg(format!("{}:/var/cache/apt/archives", cache.display()))
        .args([
            "docker.io/library/debian:bookworm-slim",
            "bash",
            "-c",
            &script,
        ])
        .env("CONTAINERS_CONF", &conf)
        .output()
        .expect("podman runs (scripts/install-test-deps.sh installs it)");
    let out = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("rc=0\n"), "{out}");
    for (package, why) in [
        ("prometheus-alertmanager", "the real Alertmanager"),
        ("prometheus", "promtool"),
        ("openssh-server", "Debian's sshd"),
        ("chromium", "headless Chromium"),
        ("podman", "builds and runs the Dockerfile's image"),
        ("debootstrap", "builds the Debian base image locally"),
        ("kubernetes-client", "kubectl kustomize"),
        ("systemd", "systemd-analyze verify"),
    ] {
        assert!(
            out.lines().any(|l| l
                .starts_with(&format!("install-test-deps: installing {package}: "))
                && l.contains(why)),
            "no line saying it installs {package}:\n{out}"
        );
    }
    assert!(out.contains("second rc=0 output=[]"), "{out}");
    assert!(out.contains("ssh at boot: disabled"), "{out}");
    assert!(out.contains("policy-rc.d kept"), "{out}");
    assert!(!out.contains("missing /"), "{out}");
    assert!(out.contains("kustomize ok"), "{out}");
}
