//! Shared helpers of the `ghaf` CLI tests that run a real server as a child process on a
//! free 127.0.0.1 port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ghaf");

/// A `ghaf server` child process, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    pub token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ghaf(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("GHAF_") || name == "RUST_LOG")
        {
            command.env_remove(&name);
        }
    }
    command
}

pub fn start_server(data_dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = ghaf(&["server", "--listen", &listen, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ghaf server");
    // The bootstrap prints the admin token once on stdout.
    let stdout = child.stdout.take().unwrap();
    let token = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.trim()
                .strip_prefix("ghaf_")
                .map(|rest| format!("ghaf_{rest}"))
        })
        .expect("the server prints an admin token");
    let server = Server {
        child,
        url: format!("http://{listen}"),
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not listen on {listen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

pub fn run(server: &Server, args: &[&str]) -> Output {
    let output = ghaf(args)
        .args(["--url", &server.url, "--token", &server.token])
        .output()
        .expect("run ghaf");
    assert!(
        output.status.success(),
        "ghaf {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/nycflights13")
        .join(name)
}
