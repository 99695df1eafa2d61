use std::process::Stdio;

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::NotificationContext;
use rmcp::{ClientHandler, RoleClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Forwards the server's start announcements to the test.
pub struct StartWatcher(pub mpsc::UnboundedSender<ProgressToken>);

impl ClientHandler for StartWatcher {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.progress_token);
    }
}

pub use crate::line_session::{LineSession, PATIENCE};

pub use crate::built_examples::example;

/// Starts `simple_server` with `args`; stdin/stdout piped, killed on drop.
pub fn spawn_server(args: &[&str]) -> Child {
    Command::new(example("simple_server"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start simple_server")
}

/// Waits for the HTTP server's "listening on" line; returns the URL. Keeps
/// draining stderr afterwards so the child never blocks on a full pipe.
pub async fn http_url(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if let Some(at) = line.find("listening on ") {
                return line[at + "listening on ".len()..].trim().to_string();
            }
        }
        panic!("simple_server exited before listening");
    })
    .await
    .expect("simple_server did not start listening in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    url
}

/// A raw JSON-RPC session with `simple_server` over its stdio.
pub type RawSession = LineSession;

impl LineSession {
    /// Starts `simple_server` over stdio with `args` and completes the
    /// initialize handshake.
    pub async fn start(args: &[&str]) -> Self {
        let mut child = spawn_server(args);
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        let mut session = Self::attach(child, "simple_server");
        session.initialize().await;
        session
    }

    /// [`Self::start`], keeping what the server logs: the task ends with
    /// every stderr line once the server has closed its stderr (exited).
    pub async fn start_logged(args: &[&str]) -> (Self, tokio::task::JoinHandle<Vec<String>>) {
        let mut child = spawn_server(args);
        let stderr = child.stderr.take().expect("piped stderr");
        let log = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut kept = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                kept.push(line);
            }
            kept
        });
        let mut session = Self::attach(child, "simple_server");
        session.initialize().await;
        (session, log)
    }
}
