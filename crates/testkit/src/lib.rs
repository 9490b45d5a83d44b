//! # grove-testkit
//!
//! Real servers and data for tests. [`Etcd`] runs the `etcd` binary (Debian package
//! `etcd-server`) on free loopback ports with its data in a temporary directory, the
//! way a user would run it. A test that needs etcd fails, loudly, when it is missing:
//! it is never skipped. [`Tansu`] runs a Kafka-API broker the same way. [`tpch`]
//! generates TPC-H tables as Parquet, with the specs that load them and the 22 queries.

pub mod tpch;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// A single-member etcd cluster of its own, killed when dropped.
pub struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd and waits until it answers its health check.
    pub fn start() -> Etcd {
        let mut last_error = String::new();
        // A free port can be taken by someone else before etcd binds it: try again.
        for _ in 0..3 {
            let mut etcd = Etcd {
                dir: tempfile::tempdir().expect("a temp dir for etcd"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            };
            match etcd.spawn() {
                Ok(()) => return etcd,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// The client URL, e.g. `http://127.0.0.1:43121`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd at once (SIGKILL); its data stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("etcd restarts on its old ports");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = etcd_binary()?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log_path = self.dir.path().join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let child = Command::new(&binary)
            .args(["--name", "grove-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("grove-test={peer}")])
            // Quick elections and no fsync waits: a test cluster of one member.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("running {}: {e}", binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "etcd exited with {status}; its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            if healthy(self.client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(format!(
            "etcd was not healthy within 20s (log: {})",
            log_path.display()
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn etcd_binary() -> Result<PathBuf, String> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")]);
    for dir in candidates {
        let path = dir.join("etcd");
        if path.is_file() {
            return Ok(path);
        }
    }
    Err("no `etcd` binary: install the Debian package etcd-server \
         (scripts/test.sh installs it when missing)"
        .into())
}

/// Whether etcd's `/health` endpoint says it is serving.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

/// A Kafka-API broker of its own (tansu, with in-memory storage) on a free loopback
/// port, killed when dropped. The binary is `$GROVE_TANSU` (`scripts/test.sh` sets it
/// to the one `scripts/deps.sh` installs).
pub struct Tansu {
    port: u16,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Tansu {
    /// Starts the broker and waits until it accepts connections.
    pub fn start() -> Tansu {
        let binary = std::env::var_os("GROVE_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("GROVE_TANSU names no tansu binary: run the tests with scripts/test.sh")
            });
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("a log file for tansu");
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(&binary)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("the log file"))
                .stderr(log.reopen().expect("the log file"))
                .spawn()
                .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
            let mut tansu = Tansu {
                port,
                child: Some(child),
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(child) = &mut tansu.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    last_error = format!("tansu exited with {status}:\n{}", tansu.log());
                    tansu.child = None;
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return tansu;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("tansu did not start: {last_error}");
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing answers, as when
    /// a broker hangs or the network drops its packets.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen broker run again (SIGCONT), its data intact.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("tansu runs").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
