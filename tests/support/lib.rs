//! Helpers for end-to-end tests: finding the `grove` binary and running it.

pub mod cluster;
pub mod flight;
pub mod start;
pub mod tasks;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `grove` binary of this build: `$GROVE_BIN`, or `grove` next to the test's
/// own directory in the target directory (`scripts/test.sh` builds it first).
pub fn grove_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GROVE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/grove
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("grove"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --workspace --all-targets, as scripts/test.sh does) or set GROVE_BIN",
        bin.display()
    );
    bin
}

/// The result of one `grove` run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A temporary directory a test works in; `grove` runs with it as `HOME`, so shell
/// history and anything else per-user stays inside it.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl Sandbox {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The path of `name` as a string argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Runs `grove ARGS` with `stdin` as its input and waits for it.
    pub fn grove(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = Command::new(grove_bin())
            .args(args)
            .env_remove("GROVE_DATA_DIR")
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start grove");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait for grove").into()
    }
}

/// The rows per device in the sample CSV under `sample/` of `sandbox`.
pub fn devices_in_csv(sandbox: &Sandbox) -> std::collections::BTreeMap<String, u64> {
    let text = std::fs::read_to_string(sandbox.path("sample/events.csv")).expect("sample CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let device = header
        .iter()
        .position(|h| *h == "device")
        .expect("a device column");
    let mut counts = std::collections::BTreeMap::new();
    for line in lines {
        let value = line.split(',').nth(device).unwrap_or_default();
        *counts.entry(value.to_string()).or_default() += 1;
    }
    counts
}

/// A shell session: a query, an error, the table list, a description, a view read
/// by a later multi-line statement, timing, and `\q` before a statement that must not
/// run.
pub const SHELL_SCRIPT: &str = "SELECT 1 + 1 AS two;\nSELEC nonsense;\n\\d\n\\d events\n\
     CREATE VIEW mobile AS SELECT * FROM events WHERE device = 'mobile';\n\
     SELECT\n  COUNT(*) AS n\n  FROM mobile;\n\\timing\nSELECT 3 AS three;\n\\q\n\
     SELECT 'after quit';\n";

/// Checks what the shell printed for [`SHELL_SCRIPT`], over data with `mobile` rows
/// of device `mobile`.
pub fn check_shell_session(run: &Run, mobile: u64) {
    assert!(run.ok, "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("| two |") && out.contains("| 2   |"), "{out}");
    assert!(
        run.stderr.contains("Error:") && run.stderr.contains("SELEC"),
        "{}",
        run.stderr
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("| druid ") && l.contains("| events ")),
        "table list: {out}"
    );
    assert!(
        out.contains("| country         | Dictionary(Int32, Utf8)"),
        "describe: {out}"
    );
    // The view made by one statement is there for the next: one session.
    assert!(
        out.contains(&format!("| {mobile} ")),
        "multi-line count over the view: {out}"
    );
    assert!(
        out.contains("Timing is on.") && out.contains("1 row(s) in"),
        "{out}"
    );
    assert!(!out.contains("after quit"), "\\q stops the shell: {out}");
}
