//! What the twin's hosts do with a command line: a POSIX-shell reading of the line (enough to
//! see every command a real shell would run, so injected commands show up in the log), then
//! the few commands the playbook needs, answering with the texts in reference/host-outputs.md.
//! Anything else exits 127, as bash does.

use std::time::Duration;

use super::estate::{
    self, GuestKind, MOUNTPOINT, NFS_EXPORT, PBS_HOST, PBS_SERVICES, PVE_STORAGE_ID,
};
use super::world::{GuestBackup, Nfs, ServiceState, World};

/// When a command's answer is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Now,
    After(Duration),
    /// Blocks until killed (a hung NFS mount).
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit: u32,
    pub completion: Completion,
    /// Every simple command the line ran, as shell words joined by spaces.
    pub executed: Vec<String>,
    /// Backups that take effect only if the command runs to completion (not killed by
    /// `timeout`): the SSH server applies them when it answers.
    pub deferred: Vec<GuestBackup>,
}

impl Outcome {
    fn ok(stdout: impl Into<String>) -> Self {
        Self {
            stdout: stdout.into(),
            stderr: String::new(),
            exit: 0,
            completion: Completion::Now,
            executed: Vec::new(),
            deferred: Vec::new(),
        }
    }

    fn fail(exit: u32, stderr: impl Into<String>) -> Self {
        Self {
            stdout: String::new(),
            stderr: stderr.into(),
            exit,
            completion: Completion::Now,
            executed: Vec::new(),
            deferred: Vec::new(),
        }
    }

    /// Blocks until killed, as I/O on a hung NFS mount does.
    fn hang() -> Self {
        Self {
            completion: Completion::Never,
            ..Self::ok("")
        }
    }

    fn with_stdout(mut self, stdout: impl Into<String>) -> Self {
        self.stdout = stdout.into();
        self
    }

    fn exit(mut self, exit: u32) -> Self {
        self.exit = exit;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `;`, `&&`, `||`, `&`, newline: separate commands. `|`: a pipe. `<`, `>`: redirections.
    Op(&'static str),
}

/// Splits `line` into tokens as a POSIX shell would. Command substitutions (`$(...)`,
/// backticks) are returned separately: a shell would run them too.
fn lex(line: &str) -> Result<(Vec<Token>, Vec<String>), String> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut substitutions = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    // An unquoted word that expands to nothing (`$(x)`) is no word at all; `''` is one.
    let mut quoted = false;
    let mut i = 0;
    let take_substitution = |i: &mut usize, subs: &mut Vec<String>| -> Result<(), String> {
        // At `$(`: find the matching `)`.
        let start = *i + 2;
        let mut depth = 1;
        let mut j = start;
        while j < chars.len() {
            match chars[j] {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        if j >= chars.len() {
            return Err("unterminated $(".into());
        }
        subs.push(chars[start..j].iter().collect());
        *i = j + 1;
        Ok(())
    };
    let take_backtick = |i: &mut usize, subs: &mut Vec<String>| -> Result<(), String> {
        let start = *i + 1;
        let end = chars[start..]
            .iter()
            .position(|&c| c == '`')
            .ok_or("unterminated `")?;
        subs.push(chars[start..start + end].iter().collect());
        *i = start + end + 1;
        Ok(())
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => {
                if in_word {
                    end_word(&mut tokens, &mut word, &mut quoted);
                    in_word = false;
                }
                i += 1;
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                in_word = true;
                quoted = true;
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or("unterminated '")?;
                word.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                in_word = true;
                quoted = true;
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unterminated \"".into());
                    };
                    match c {
                        '"' => {
                            i += 1;
                            break;
                        }
                        '\\' if matches!(chars.get(i + 1), Some('$' | '`' | '"' | '\\' | '\n')) => {
                            if chars[i + 1] != '\n' {
                                word.push(chars[i + 1]);
                            }
                            i += 2;
                        }
                        '$' if chars.get(i + 1) == Some(&'(') => {
                            take_substitution(&mut i, &mut substitutions)?
                        }
                        '`' => take_backtick(&mut i, &mut substitutions)?,
                        _ => {
                            word.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                quoted = true;
                match chars.get(i + 1) {
                    Some('\n') => {}
                    Some(&next) => word.push(next),
                    None => {}
                }
                i += 2;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                in_word = true;
                take_substitution(&mut i, &mut substitutions)?;
            }
            '`' => {
                in_word = true;
                take_backtick(&mut i, &mut substitutions)?;
            }
            ';' | '\n' | '&' | '|' | '<' | '>' => {
                if in_word {
                    end_word(&mut tokens, &mut word, &mut quoted);
                    in_word = false;
                }
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = match (c, two.as_str()) {
                    (_, "&&") => "&&",
                    (_, "||") => "||",
                    (_, ">>") => ">>",
                    (';', _) | ('\n', _) => ";",
                    ('&', _) => "&",
                    ('|', _) => "|",
                    ('<', _) => "<",
                    _ => ">",
                };
                tokens.push(Token::Op(op));
                i += op.len().max(1);
            }
            _ => {
                in_word = true;
                word.push(c);
                i += 1;
            }
        }
    }
    if in_word {
        end_word(&mut tokens, &mut word, &mut quoted);
    }
    Ok((tokens, substitutions))
}

fn end_word(tokens: &mut Vec<Token>, word: &mut String, quoted: &mut bool) {
    if !word.is_empty() || *quoted {
        tokens.push(Token::Word(std::mem::take(word)));
    }
    *quoted = false;
}

fn join(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// Command substitutions nested deeper than this are refused rather than followed.
const MAX_NESTING: usize = 8;

/// Runs `line` on `host` against `world`.
pub fn run(world: &mut World, host: &str, line: &str) -> Outcome {
    run_nested(world, host, line, 0)
}

fn run_nested(world: &mut World, host: &str, line: &str, depth: usize) -> Outcome {
    if depth > MAX_NESTING {
        return Outcome::fail(
            2,
            "bash: -c: line 1: command substitutions nested too deeply\n",
        );
    }
    world.settle();
    let (tokens, substitutions) = match lex(line) {
        Ok(lexed) => lexed,
        Err(error) => {
            return Outcome::fail(2, format!("bash: -c: line 1: syntax error: {error}\n"));
        }
    };
    let mut executed = Vec::new();
    // A shell runs command substitutions too; they are logged, and their output dropped.
    for inner in &substitutions {
        executed.extend(run_nested(world, host, inner, depth + 1).executed);
    }
    let mut last = Outcome::ok("");
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut deferred = Vec::new();
    for pipeline in tokens.split(|t| matches!(t, Token::Op(";" | "&&" | "||" | "&"))) {
        let mut input: Option<String> = None;
        for command in pipeline.split(|t| matches!(t, Token::Op("|"))) {
            if command.iter().any(|t| matches!(t, Token::Op(_))) {
                let argv = words(command);
                executed.push(join(&argv));
                last = Outcome::fail(2, "twin: redirections are not simulated\n");
                continue;
            }
            let argv = words(command);
            if argv.is_empty() {
                continue;
            }
            executed.push(join(&argv));
            last = exec(world, host, &argv, input.as_deref());
            deferred.append(&mut last.deferred);
            input = Some(last.stdout.clone());
        }
        if let Some(out) = input {
            stdout.push_str(&out);
        }
        stderr.push_str(&last.stderr);
    }
    Outcome {
        stdout,
        stderr,
        exit: last.exit,
        completion: last.completion,
        executed,
        deferred,
    }
}

fn words(tokens: &[Token]) -> Vec<String> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.clone()),
            Token::Op(_) => None,
        })
        .collect()
}

fn not_found(command: &str) -> Outcome {
    Outcome::fail(127, format!("bash: line 1: {command}: command not found\n"))
}

/// Parses `10`, `10s`, `1.5`, `2m`.
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = match text.chars().last()? {
        's' => (&text[..text.len() - 1], 1.0),
        'm' => (&text[..text.len() - 1], 60.0),
        'h' => (&text[..text.len() - 1], 3600.0),
        _ => (text, 1.0),
    };
    let seconds: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(seconds * unit).ok()
}

fn exec(world: &mut World, host: &str, argv: &[String], stdin: Option<&str>) -> Outcome {
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let is_pbs = host == PBS_HOST;
    let is_pve = estate::PVE_HOSTS.contains(&host);
    match argv[0].as_str() {
        "timeout" => timeout(world, host, &argv[1..], stdin),
        "hostname" => Outcome::ok(format!("{host}\n")),
        "cat" => cat(world, host, &args),
        "tail" => tail(world, host, &args),
        "grep" => grep(world, host, &args, stdin),
        "systemctl" => systemctl(world, host, &args),
        "mount" if is_pbs => mount(world, &args),
        "umount" if is_pbs => umount(world, &args),
        "findmnt" if is_pbs => findmnt(world, &args),
        "df" if is_pbs => df(world, &args),
        "ls" if is_pbs => ls(world, &args),
        "openssl" if is_pbs => openssl(world, &args),
        "qm" if is_pve => guest_command(world, host, GuestKind::Qemu, &args),
        "pct" if is_pve => guest_command(world, host, GuestKind::Lxc, &args),
        "vzdump" if is_pve => vzdump(world, host, &args),
        "pvesh" if is_pve => pvesh(world, &args),
        "pvesm" if is_pve => pvesm(world, &args),
        other => not_found(other),
    }
}

fn timeout(world: &mut World, host: &str, argv: &[String], stdin: Option<&str>) -> Outcome {
    let mut rest = argv;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "-k" | "-s" | "--kill-after" | "--signal" => rest = rest.get(2..).unwrap_or_default(),
            flag if flag.starts_with("--kill-after=") || flag.starts_with("--signal=") => {
                rest = &rest[1..]
            }
            "--preserve-status" | "--foreground" | "-v" | "--verbose" => rest = &rest[1..],
            _ => break,
        }
    }
    let Some((limit, command)) = rest.split_first() else {
        return Outcome::fail(125, "timeout: missing operand\n");
    };
    let Some(limit) = parse_duration(limit) else {
        return Outcome::fail(125, format!("timeout: invalid time interval '{limit}'\n"));
    };
    if command.is_empty() {
        return Outcome::fail(125, "timeout: missing operand\n");
    }
    let inner = exec(world, host, command, stdin);
    let timed_out = match inner.completion {
        Completion::Never => true,
        Completion::After(after) => after > limit,
        Completion::Now => false,
    };
    if timed_out {
        Outcome {
            stdout: String::new(),
            stderr: String::new(),
            exit: 124,
            completion: Completion::After(limit),
            executed: Vec::new(),
            // Killed before it finished: its effects never happen.
            deferred: Vec::new(),
        }
    } else {
        inner
    }
}

fn cat(world: &World, host: &str, args: &[&str]) -> Outcome {
    let mut out = String::new();
    for path in args {
        match world.read_file(host, path) {
            Some(text) => out.push_str(&text),
            None => {
                return Outcome::fail(1, format!("cat: {path}: No such file or directory\n"))
                    .with_stdout(out);
            }
        }
    }
    Outcome::ok(out)
}

fn tail(world: &World, host: &str, args: &[&str]) -> Outcome {
    let mut lines = 10usize;
    let mut path = None;
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            "-n" => {
                lines = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(10);
                i += 2;
            }
            arg if arg.starts_with("-n") => {
                lines = arg[2..].parse().unwrap_or(10);
                i += 1;
            }
            arg => {
                path = Some(arg);
                i += 1;
            }
        }
    }
    let Some(path) = path else {
        return Outcome::fail(1, "tail: reading standard input is not simulated\n");
    };
    match world.read_file(host, path) {
        Some(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            Outcome::ok(
                all[start..]
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect::<String>(),
            )
        }
        None => Outcome::fail(
            1,
            format!("tail: cannot open '{path}' for reading: No such file or directory\n"),
        ),
    }
}

fn grep(world: &World, host: &str, args: &[&str], stdin: Option<&str>) -> Outcome {
    let mut ignore_case = false;
    let (mut after, mut before) = (0usize, 0usize);
    let mut pattern = None;
    let mut files = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        match args[i] {
            "-i" => ignore_case = true,
            "-A" => (after, i) = (value(), i + 1),
            "-B" => (before, i) = (value(), i + 1),
            "-C" => (after, before, i) = (value(), value(), i + 1),
            "-e" => (pattern, i) = (args.get(i + 1).copied(), i + 1),
            flag if flag.starts_with('-') && flag.len() > 1 => {}
            word if pattern.is_none() => pattern = Some(word),
            file => files.push(file),
        }
        i += 1;
    }
    let Some(pattern) = pattern else {
        return Outcome::fail(2, "Usage: grep [OPTION]... PATTERNS [FILE]...\n");
    };
    let text = match files.first() {
        Some(path) => match world.read_file(host, path) {
            Some(text) => text,
            None => return Outcome::fail(2, format!("grep: {path}: No such file or directory\n")),
        },
        None => stdin.unwrap_or_default().to_owned(),
    };
    // Plain text with optional `^` and `$` anchors: what the playbook's probes use.
    let fold = |s: &str| {
        if ignore_case {
            s.to_lowercase()
        } else {
            s.to_owned()
        }
    };
    let pattern = fold(pattern);
    let (anchored_start, rest) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, pattern.as_str()),
    };
    let (anchored_end, needle) = match rest.strip_suffix('$') {
        Some(needle) => (true, needle),
        None => (false, rest),
    };
    let matches = |line: &str| {
        let line = fold(line);
        match (anchored_start, anchored_end) {
            (true, true) => line == needle,
            (true, false) => line.starts_with(needle),
            (false, true) => line.ends_with(needle),
            (false, false) => line.contains(needle),
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut shown = vec![false; lines.len()];
    for (n, line) in lines.iter().enumerate() {
        if matches(line) {
            for s in shown
                .iter_mut()
                .take((n + after + 1).min(lines.len()))
                .skip(n.saturating_sub(before))
            {
                *s = true;
            }
        }
    }
    let found: String = lines
        .iter()
        .zip(&shown)
        .filter(|(_, s)| **s)
        .map(|(l, _)| format!("{l}\n"))
        .collect();
    if found.is_empty() {
        Outcome::fail(1, "")
    } else {
        Outcome::ok(found)
    }
}

fn unit_name(unit: &str) -> String {
    unit.trim_end_matches(".service").to_owned()
}

fn systemctl(world: &mut World, host: &str, args: &[&str]) -> Outcome {
    let Some((verb, units)) = args.split_first() else {
        return Outcome::fail(1, "systemctl: listing units is not simulated\n");
    };
    let units: Vec<String> = units
        .iter()
        .filter(|u| !u.starts_with('-'))
        .map(|u| unit_name(u))
        .collect();
    let known = |u: &str| host == PBS_HOST && PBS_SERVICES.contains(&u);
    let state = |world: &World, u: &str| {
        if known(u) {
            world
                .services
                .get(u)
                .copied()
                .unwrap_or(ServiceState::Inactive)
        } else {
            ServiceState::Inactive
        }
    };
    match *verb {
        "is-active" => {
            let states: Vec<ServiceState> = units.iter().map(|u| state(world, u)).collect();
            let out: String = states.iter().map(|s| format!("{}\n", s.as_str())).collect();
            let all_active =
                !states.is_empty() && states.iter().all(|s| *s == ServiceState::Active);
            Outcome::ok(out).exit(if all_active { 0 } else { 3 })
        }
        "status" => {
            let mut out = String::new();
            let mut all_active = true;
            for u in &units {
                let s = state(world, u);
                all_active &= s == ServiceState::Active;
                let active = match s {
                    ServiceState::Active => {
                        "active (running) since Wed 2026-11-25 02:13:40 NZDT; 1 day ago".to_owned()
                    }
                    ServiceState::Inactive => "inactive (dead)".to_owned(),
                    ServiceState::Failed => {
                        "failed (Result: exit-code) since Thu 2026-11-26 01:58:02 NZDT".to_owned()
                    }
                };
                let loaded = if known(u) {
                    format!("loaded (/lib/systemd/system/{u}.service; enabled; preset: enabled)")
                } else {
                    "not-found (Reason: Unit {u}.service not found.)".replace("{u}", u)
                };
                out.push_str(&format!(
                    "● {u}.service\n     Loaded: {loaded}\n     Active: {active}\n\n"
                ));
            }
            Outcome::ok(out).exit(if all_active { 0 } else { 3 })
        }
        "restart" | "start" | "stop" => {
            if let Some(unknown) = units.iter().find(|u| !known(u)) {
                return Outcome::fail(
                    5,
                    format!(
                        "Failed to {verb} {unknown}.service: Unit {unknown}.service not found.\n"
                    ),
                );
            }
            if *verb == "stop" {
                for u in &units {
                    world.services.insert(u.clone(), ServiceState::Inactive);
                }
            } else {
                world.restart_services(&units);
            }
            Outcome::ok("")
        }
        other => Outcome::fail(1, format!("twin: systemctl {other} is not simulated\n")),
    }
}

fn nfs_line() -> String {
    format!(
        "{NFS_EXPORT} on {MOUNTPOINT} type nfs4 (rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,local_lock=none)\n"
    )
}

fn mount(world: &mut World, args: &[&str]) -> Outcome {
    let targets: Vec<&&str> = args.iter().filter(|a| !a.starts_with('-')).collect();
    match targets.as_slice() {
        [] => {
            let mut out = String::from(
                "sysfs on /sys type sysfs (rw,nosuid,nodev,noexec,relatime)\nproc on /proc type proc (rw,nosuid,nodev,noexec,relatime)\n/dev/mapper/vg0-root on / type ext4 (rw,relatime,errors=remount-ro)\n",
            );
            if world.nfs != Nfs::Unmounted {
                out.push_str(&nfs_line());
            }
            Outcome::ok(out)
        }
        [target] if **target == MOUNTPOINT || **target == NFS_EXPORT => {
            if world.nfs != Nfs::Unmounted {
                return Outcome::fail(
                    32,
                    format!("mount: {MOUNTPOINT}: {NFS_EXPORT} already mounted on {MOUNTPOINT}.\n"),
                );
            }
            world.nfs = Nfs::Mounted;
            Outcome::ok("")
        }
        [target, ..] => Outcome::fail(1, format!("mount: {target}: can't find in /etc/fstab.\n")),
    }
}

fn umount(world: &mut World, args: &[&str]) -> Outcome {
    let lazy = args.contains(&"-l");
    let Some(target) = args.iter().find(|a| !a.starts_with('-')) else {
        return Outcome::fail(1, "umount: bad usage\n");
    };
    if *target != MOUNTPOINT {
        return Outcome::fail(32, format!("umount: {target}: not mounted.\n"));
    }
    match world.nfs {
        Nfs::Unmounted => Outcome::fail(32, format!("umount: {MOUNTPOINT}: not mounted.\n")),
        Nfs::Hung if !lazy => Outcome::hang(),
        _ => {
            world.nfs = Nfs::Unmounted;
            // The PBS processes keep their now-dangling handles until restarted.
            world.handles = super::world::Handles::StaleEnoent;
            Outcome::ok("")
        }
    }
}

fn findmnt(world: &World, args: &[&str]) -> Outcome {
    let mut no_header = false;
    let mut columns = vec!["TARGET", "SOURCE", "FSTYPE", "OPTIONS"];
    let mut target = None;
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            "--noheadings" => no_header = true,
            "--output" => {
                columns = args
                    .get(i + 1)
                    .map(|c| c.split(',').collect())
                    .unwrap_or_default();
                i += 1;
            }
            // Short flags, alone or combined (`-no SOURCE`): `o` takes the next word.
            flag if flag.starts_with('-') && !flag.starts_with("--") => {
                for c in flag[1..].chars() {
                    match c {
                        'n' => no_header = true,
                        'o' => {
                            columns = args
                                .get(i + 1)
                                .map(|c| c.split(',').collect())
                                .unwrap_or_default();
                            i += 1;
                        }
                        _ => {}
                    }
                }
            }
            arg => target = Some(arg),
        }
        i += 1;
    }
    if world.nfs == Nfs::Unmounted || target.is_some_and(|t| t != MOUNTPOINT) {
        return Outcome::fail(1, "");
    }
    let value = |c: &str| match c {
        "TARGET" => MOUNTPOINT.to_owned(),
        "SOURCE" => NFS_EXPORT.to_owned(),
        "FSTYPE" => "nfs4".to_owned(),
        "OPTIONS" => "rw,relatime,vers=4.2,hard,proto=tcp,timeo=600,retrans=2".to_owned(),
        _ => String::new(),
    };
    let mut out = String::new();
    if !no_header {
        out.push_str(&columns.join(" "));
        out.push('\n');
    }
    out.push_str(
        &columns
            .iter()
            .map(|c| value(c))
            .collect::<Vec<_>>()
            .join(" "),
    );
    out.push('\n');
    Outcome::ok(out)
}

fn df(world: &World, args: &[&str]) -> Outcome {
    let path = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .copied()
        .unwrap_or("/");
    let header = "Filesystem                  Size  Used Avail Use% Mounted on\n";
    let root = "/dev/mapper/vg0-root         30G  4.1G   24G  15% /\n";
    if path.starts_with(MOUNTPOINT) {
        match world.nfs {
            Nfs::Hung => return Outcome::hang(),
            Nfs::Mounted => {
                return Outcome::ok(format!(
                    "{header}{NFS_EXPORT}  7.3T  2.1T  5.2T  29% {MOUNTPOINT}\n"
                ));
            }
            Nfs::Unmounted => {}
        }
    }
    Outcome::ok(format!("{header}{root}"))
}

fn ls(world: &World, args: &[&str]) -> Outcome {
    let dir_only = args.iter().any(|a| a.starts_with('-') && a.contains('d'));
    let Some(path) = args.iter().find(|a| !a.starts_with('-')) else {
        return Outcome::ok("");
    };
    let path = path.trim_end_matches('/');
    if path.starts_with(MOUNTPOINT) {
        match world.nfs {
            Nfs::Hung => return Outcome::hang(),
            Nfs::Unmounted if path != MOUNTPOINT => {
                return Outcome::fail(
                    2,
                    format!("ls: cannot access '{path}': No such file or directory\n"),
                );
            }
            Nfs::Unmounted => {
                return Outcome::ok(if dir_only {
                    format!("{path}\n")
                } else {
                    String::new()
                });
            }
            Nfs::Mounted => {}
        }
        if dir_only {
            return Outcome::ok(format!("{path}\n"));
        }
        return match path.strip_prefix(MOUNTPOINT) {
            Some("") => Outcome::ok(".chunks\n.gc-status\n.lock\nct\nvm\n"),
            Some("/.chunks") => {
                Outcome::ok((0..16).map(|i| format!("{i:04x}\n")).collect::<String>())
            }
            _ => Outcome::fail(
                2,
                format!("ls: cannot access '{path}': No such file or directory\n"),
            ),
        };
    }
    Outcome::fail(
        2,
        format!("ls: cannot access '{path}': No such file or directory\n"),
    )
}

fn openssl(world: &World, args: &[&str]) -> Outcome {
    let reads_proxy_cert = args.first() == Some(&"x509")
        && args
            .windows(2)
            .any(|w| w == ["-in", "/etc/proxmox-backup/proxy.pem"])
        && args.contains(&"-fingerprint");
    if !reads_proxy_cert {
        return Outcome::fail(
            1,
            "twin: only `openssl x509 -in /etc/proxmox-backup/proxy.pem -noout -fingerprint -sha256` is simulated\n",
        );
    }
    Outcome::ok(format!(
        "sha256 Fingerprint={}\n",
        world.pbs_cert_fingerprint
    ))
}

fn guest_command(world: &mut World, host: &str, kind: GuestKind, args: &[&str]) -> Outcome {
    let tool = if kind == GuestKind::Qemu { "qm" } else { "pct" };
    let (Some(verb), Some(id)) = (args.first(), args.get(1)) else {
        return Outcome::fail(
            255,
            format!("400 not enough arguments\n{tool} <command> <vmid>\n"),
        );
    };
    let Ok(vmid) = id.parse::<u32>() else {
        return Outcome::fail(
            255,
            format!(
                "400 Parameter verification failed.\nvmid: type check ('integer') failed - got '{id}'\n"
            ),
        );
    };
    let config_dir = if kind == GuestKind::Qemu {
        "qemu-server"
    } else {
        "lxc"
    };
    let missing =
        format!("Configuration file 'nodes/{host}/{config_dir}/{vmid}.conf' does not exist\n");
    let Some(guest) = world.guest(host, kind, vmid) else {
        return Outcome::fail(2, missing);
    };
    match *verb {
        "status" => Outcome::ok(format!(
            "status: {}\n",
            if guest.running { "running" } else { "stopped" }
        )),
        "start" => match world.start_guest(host, kind, vmid) {
            Ok(()) => Outcome::ok(""),
            Err(message) => Outcome::fail(255, format!("{message}\n")),
        },
        other => Outcome::fail(255, format!("twin: {tool} {other} is not simulated\n")),
    }
}

fn vzdump(world: &mut World, host: &str, args: &[&str]) -> Outcome {
    let mut vmids = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        if arg == "--all" {
            i += 2;
            continue;
        }
        if arg.starts_with("--") {
            i += 2;
            continue;
        }
        match arg.parse::<u32>() {
            Ok(id) => vmids.push(id),
            Err(_) => {
                return Outcome::fail(
                    255,
                    format!(
                        "400 Parameter verification failed.\nvmid: invalid format - value '{arg}' does not look like a valid VM ID\n"
                    ),
                );
            }
        }
        i += 1;
    }
    let Some((results, log)) = world.backup_plan(host, &vmids) else {
        return Outcome::ok("");
    };
    let ok = results.iter().all(|r| r.ok);
    let text: String = log.iter().map(|l| format!("{l}\n")).collect();
    Outcome {
        stdout: String::new(),
        stderr: text,
        exit: if ok { 0 } else { 255 },
        completion: Completion::After(world.vzdump_duration),
        executed: Vec::new(),
        deferred: results,
    }
}

fn pvesh(world: &mut World, args: &[&str]) -> Outcome {
    match args {
        ["get", "/cluster/backup", rest @ ..] => {
            let json = rest.windows(2).any(|w| w == ["--output-format", "json"]);
            let jobs = world.backup_job_json();
            if json {
                Outcome::ok(format!("{jobs}\n"))
            } else {
                Outcome::ok(format!(
                    "┌──────────────────────┬──────────┬─────────┐\n│ id                   │ schedule │ enabled │\n├──────────────────────┼──────────┼─────────┤\n│ {} │ 02:00    │ {}       │\n└──────────────────────┴──────────┴─────────┘\n",
                    estate::BACKUP_JOB_ID,
                    u8::from(world.job_enabled)
                ))
            }
        }
        ["set", path, "--enabled", value] | ["set", path, "--enable", value]
            if *path == format!("/cluster/backup/{}", estate::BACKUP_JOB_ID) =>
        {
            world.job_enabled = *value == "1";
            Outcome::ok("")
        }
        _ => Outcome::fail(
            255,
            format!("twin: pvesh {} is not simulated\n", args.join(" ")),
        ),
    }
}

fn pvesm(world: &mut World, args: &[&str]) -> Outcome {
    match args {
        ["set", storage, rest @ ..] => {
            if *storage != PVE_STORAGE_ID {
                return Outcome::fail(
                    255,
                    format!("update storage failed: storage '{storage}' does not exist\n"),
                );
            }
            if let Some(fingerprint) = rest
                .windows(2)
                .find(|w| w[0] == "--fingerprint")
                .map(|w| w[1])
            {
                world.storage_fingerprint = fingerprint.to_owned();
            }
            Outcome::ok("")
        }
        ["status", ..] => Outcome::ok(format!(
            "Name             Type     Status           Total            Used       Available        %\nlocal             dir     active        98497780        10420112        83028088   10.58%\n{PVE_STORAGE_ID}       pbs     {}     7811796992      2254857830      5556939162   28.87%\n",
            if world.pbs_api_up() && world.datastore_error().is_none() {
                "active  "
            } else {
                "inactive"
            }
        )),
        _ => Outcome::fail(
            255,
            format!("twin: pvesm {} is not simulated\n", args.join(" ")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexed(line: &str) -> (Vec<Token>, Vec<String>) {
        lex(line).unwrap()
    }

    fn w(s: &str) -> Token {
        Token::Word(s.into())
    }

    #[test]
    fn quoting_keeps_words_together() {
        assert_eq!(lexed("qm status 451").0, [w("qm"), w("status"), w("451")]);
        assert_eq!(
            lexed("echo 'a; b' \"c $ d\" e\\ f").0,
            [w("echo"), w("a; b"), w("c $ d"), w("e f")]
        );
        assert_eq!(lexed("x 'it'\\''s'").0, [w("x"), w("it's")]);
    }

    #[test]
    fn operators_and_substitutions_are_seen() {
        let (tokens, subs) = lexed("qm status 451; rm -rf / && reboot | grep x");
        assert!(
            tokens.contains(&Token::Op(";"))
                && tokens.contains(&Token::Op("&&"))
                && tokens.contains(&Token::Op("|"))
        );
        assert!(subs.is_empty());
        let (_, subs) = lexed("qm status $(reboot) `id` \"$(halt)\"");
        assert_eq!(subs, ["reboot", "id", "halt"]);
        let (_, subs) = lexed("qm status '$(reboot)' \"\\$(halt)\"");
        assert!(subs.is_empty(), "quoted substitutions are inert: {subs:?}");
    }

    fn world() -> World {
        World::new(
            "healthy",
            std::sync::Arc::new(crate::clock::SystemClock),
            "AB:CD",
        )
        .unwrap()
    }

    #[test]
    fn mount_grep_pbs_is_empty_when_unmounted() {
        let mut w = world();
        assert_eq!(run(&mut w, "pbs", "mount | grep pbs").exit, 0);
        w.load("nfs-unmounted").unwrap();
        let out = run(&mut w, "pbs", "mount | grep pbs");
        assert_eq!((out.exit, out.stdout.as_str()), (1, ""));
    }

    #[test]
    fn grep_context_and_anchors_and_findmnt_combined_flags() {
        let mut w = world();
        let out = run(
            &mut w,
            "ruapehu",
            "grep -A 2 'pbs: pbs-pihanga' /etc/pve/storage.cfg",
        );
        assert_eq!(
            out.stdout,
            "pbs: pbs-pihanga\n\tdatastore pbs-datastore\n\tserver 127.0.0.1\n"
        );
        assert_eq!(
            run(&mut w, "ruapehu", "grep ^pbs: /etc/pve/storage.cfg").stdout,
            "pbs: pbs-pihanga\n"
        );
        assert_eq!(
            run(&mut w, "pbs", "findmnt -no SOURCE /mnt/pbs-datastore").stdout,
            "truenas-hdd:/mnt/Taupo/pbs\n"
        );
    }

    #[test]
    fn hostile_durations_and_nesting_are_refused_not_fatal() {
        let mut w = world();
        assert_eq!(run(&mut w, "pbs", "timeout inf true").exit, 125);
        assert_eq!(run(&mut w, "pbs", "timeout 1e30 hostname").exit, 125);
        let deep = format!("echo {}x{}", "$(".repeat(50), ")".repeat(50));
        assert_eq!(
            run(&mut w, "pbs", &deep).exit,
            127,
            "runs, refusing the deepest substitutions"
        );
    }

    #[test]
    fn a_vzdump_killed_by_timeout_changes_nothing() {
        let mut w = world();
        let killed = run(
            &mut w,
            "ruapehu",
            "timeout 1 vzdump 451 --storage pbs-pihanga",
        );
        assert_eq!(killed.exit, 124);
        assert!(killed.deferred.is_empty());
        let done = run(
            &mut w,
            "ruapehu",
            "timeout 60 vzdump 451 --storage pbs-pihanga",
        );
        assert_eq!((done.exit, done.deferred.len()), (0, 1));
        let unknown = run(&mut w, "ruapehu", "vzdump 999 --storage pbs-pihanga");
        assert_eq!(unknown.exit, 255);
        assert!(
            unknown.stderr.contains("ERROR: unable to find VM '999'"),
            "{}",
            unknown.stderr
        );
    }

    #[test]
    fn timeout_durations() {
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
    }
}

/// Property tests (issue 12): the lexer never panics, and reads what the one quoting function
/// writes exactly as a real `sh` does; the twin's commands take any line without panicking.
#[cfg(test)]
mod proptests {
    use std::process::Command;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::clock::SystemClock;
    use crate::exec::command::quote;
    use crate::lab::world::SCENARIOS;

    /// `cases` cases, no failure files.
    fn cases(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Pieces of shell syntax, and of the command lines the playbook sends.
    const PIECES: &[&str] = &[
        " ",
        " ",
        "\t",
        "\n",
        "'",
        "\"",
        "\\",
        "$(",
        ")",
        "(",
        "`",
        ";",
        "&&",
        "||",
        "&",
        "|",
        "<",
        ">",
        ">>",
        "#",
        "$",
        "*",
        "~",
        "timeout",
        "-k",
        "5",
        "10",
        "inf",
        "1e30",
        "0.5s",
        "qm",
        "pct",
        "status",
        "start",
        "451",
        "101",
        "999",
        "vzdump",
        "--storage",
        "pbs-pihanga",
        "systemctl",
        "is-active",
        "restart",
        "proxmox-backup",
        "proxmox-backup-proxy",
        "mount",
        "umount",
        "-l",
        "findmnt",
        "-n",
        "-o",
        "-no",
        "SOURCE,FSTYPE",
        "df",
        "-h",
        "ls",
        "-d",
        "/mnt/pbs-datastore",
        "/mnt/pbs-datastore/.chunks",
        "cat",
        "tail",
        "-n",
        "-1",
        "grep",
        "-A",
        "-c",
        "^pbs:",
        "/etc/pve/storage.cfg",
        "/var/log/vzdump/qemu-451.log",
        "openssl",
        "x509",
        "-fingerprint",
        "pvesh",
        "set",
        "get",
        "/cluster/backup/backup-1",
        "--enabled",
        "1",
        "pvesm",
        "--fingerprint",
        "hostname",
        "é",
        "😀",
    ];

    fn shell_like() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(PIECES).prop_map(str::to_owned),
                1 => any::<char>().prop_map(String::from),
            ],
            0..24,
        )
        .prop_map(|pieces| pieces.concat())
    }

    /// Any text but NUL, weighted towards what a shell treats specially.
    fn word() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                1 => any::<char>().prop_map(String::from),
                2 => prop::sample::select(PIECES).prop_map(str::to_owned),
                1 => "[a-z0-9]{1,4}",
            ],
            0..8,
        )
        .prop_map(|pieces| pieces.concat().replace('\0', ""))
    }

    /// The words a real `sh` reads from `line` as a command's arguments.
    fn sh_words(line: &str) -> Vec<String> {
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {line}"))
            .output()
            .expect("/bin/sh runs");
        assert!(output.status.success(), "sh -c {line:?}");
        let mut words: Vec<String> = output
            .stdout
            .split(|&b| b == 0)
            .map(|w| String::from_utf8(w.to_vec()).expect("the words were UTF-8"))
            .collect();
        assert_eq!(words.pop().as_deref(), Some(""), "every word ends in NUL");
        words
    }

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn the_lexer_never_panics(line in any::<String>()) {
            let _ = lex(&line);
        }

        #[test]
        fn the_lexer_never_panics_on_shell_syntax(line in shell_like()) {
            let _ = lex(&line);
        }
    }

    proptest! {
        #![proptest_config(cases(256))]

        /// Every host runs any line to an outcome, in any scenario.
        #[test]
        fn the_twin_answers_any_command_line(
            line in shell_like(),
            host in prop::sample::select(&["pbs", "ruapehu", "pihanga", "hikurangi", "other"]),
            scenario in prop::sample::select(&SCENARIOS),
        ) {
            let mut world = World::new(scenario, Arc::new(SystemClock), "AB:CD").unwrap();
            let outcome = run(&mut world, host, &line);
            prop_assert!(outcome.exit <= 255, "{outcome:?}");
        }
    }

    proptest! {
        #![proptest_config(cases(96))]

        /// Quoted words, however separated, lex to exactly those words, as `sh` reads them,
        /// and hide no command substitution.
        #[test]
        fn quoted_words_lex_as_sh_reads_them(
            words in prop::collection::vec(word(), 1..5),
            blank in prop::sample::select(&[" ", "\t", "  ", " \t "]),
        ) {
            let quoted: Vec<String> = words.iter().map(|w| quote(w).unwrap()).collect();
            let line = quoted.join(blank);
            let (tokens, substitutions) = lex(&line).map_err(TestCaseError::fail)?;
            prop_assert!(substitutions.is_empty(), "{line:?}: {substitutions:?}");
            let lexed: Vec<String> = tokens
                .into_iter()
                .map(|token| match token {
                    Token::Word(word) => Ok(word),
                    Token::Op(op) => Err(TestCaseError::fail(format!("{line:?}: operator {op}"))),
                })
                .collect::<Result<_, _>>()?;
            prop_assert_eq!(&lexed, &words, "{:?}", line);
            prop_assert_eq!(&sh_words(&line), &words, "{:?}", line);
        }
    }
}
