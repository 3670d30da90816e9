#![allow(dead_code)] // shared by the console tests; each uses part of it
//! The real binary with its admin API and console, a PBX that answers every
//! relayed INVITE 486, and SIP calls from a trunk: what the console tests
//! drive.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::binary;
use crate::common::{Udp, invite, response_to, status};

pub const TOKEN: &str = "console-test-token";

/// `sipsentry serve` in its own directory, and the PBX behind it.
pub struct Operator {
    pub dir: tempfile::TempDir,
    serve: Option<binary::Serve>,
    pub sip: SocketAddr,
    pub admin: String,
    pub admin_port: u16,
    pub http: reqwest::Client,
    token: Option<&'static str>,
    /// Environment variables serve runs with (provider tokens, passwords).
    env: Vec<(String, String)>,
    /// Every INVITE the PBX received, as received.
    pub pbx_seen: Arc<Mutex<Vec<String>>>,
    pbx: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.pbx.abort();
    }
}

/// A PBX that answers each INVITE `486 Busy Here` after `delay`.
async fn pbx(sock: Udp, seen: Arc<Mutex<Vec<String>>>, delay: Duration) {
    loop {
        let Some((msg, from)) = sock.recv_within(Duration::from_secs(3600)).await else {
            continue;
        };
        if msg.starts_with("INVITE ") {
            seen.lock().unwrap().push(msg.clone());
            tokio::time::sleep(delay).await;
            sock.send(from, &response_to(&msg, 486, "Busy Here", "pbx1"))
                .await;
        }
    }
}

impl Operator {
    /// Starts serve with `extra` appended to a config (history, no Hiya
    /// cache), with the admin token set when `token` is.
    pub async fn start(extra: &str, token: Option<&'static str>) -> Operator {
        Self::start_with("", extra, token, &[]).await
    }

    /// As [`Operator::start`], with more `[sip]` keys and `files` (name,
    /// contents) written beside the config first.
    pub async fn start_with(
        sip_lines: &str,
        extra: &str,
        token: Option<&'static str>,
        files: &[(&str, &str)],
    ) -> Operator {
        Self::start_full(sip_lines, "", extra, token, files, &[]).await
    }

    /// As [`Operator::start_with`], with more `[history]` keys and serve's
    /// environment extended by `env`.
    pub async fn start_full(
        sip_lines: &str,
        history_lines: &str,
        extra: &str,
        token: Option<&'static str>,
        files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Operator {
        let pbx_sock = Udp::new().await;
        let uas = pbx_sock.addr;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let pbx = tokio::spawn(pbx(pbx_sock, Arc::clone(&seen), Duration::from_millis(30)));
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let sip_port = binary::free_port();
        let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("sipsentry.toml"),
            format!(
                "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\nnext_hop = \"sip:{uas}\"\n{sip_lines}\
                 [hiya_cache]\nenabled = false\n[history]\npath = \"data/history.db\"\nbatch_ms = 10\n{history_lines}\
                 [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_env = \"CONSOLE_TEST_TOKEN\"\n{extra}"
            ),
        )
        .unwrap();
        let mut op = Operator {
            dir,
            serve: None,
            sip: format!("127.0.0.1:{sip_port}").parse().unwrap(),
            admin: format!("http://127.0.0.1:{admin_port}"),
            admin_port,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            token,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pbx_seen: seen,
            pbx,
        };
        op.launch().await;
        op
    }

    async fn launch(&mut self) {
        let mut cmd = std::process::Command::new(binary::BIN);
        cmd.arg("serve")
            .current_dir(self.dir.path())
            .env_remove("CONSOLE_TEST_TOKEN")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // Appended to across restarts; tests read what serve logged.
            .stderr(self.log_file());
        if let Some(t) = self.token {
            cmd.env("CONSOLE_TEST_TOKEN", t);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        self.serve = Some(binary::Serve {
            child: cmd.spawn().unwrap(),
        });
        let sip = self.sip;
        tokio::task::spawn_blocking(move || binary::wait_until_answering(sip))
            .await
            .unwrap();
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap()
    }

    /// What serve has logged on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// What serve has logged once every one of `lines` is in it: serve
    /// writes its log in rounds (docs/operations.md, "Logs"), so a line
    /// logged a moment ago may not be in the file yet. Gives up after 10 s
    /// and returns what there is, for the caller's assertion to show.
    pub async fn log_with(&self, lines: &[&str]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log();
            if lines.iter().all(|l| log.contains(l)) || std::time::Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stops serve (SIGTERM) and starts it again on the same files.
    pub async fn restart(&mut self) {
        if let Some(s) = self.serve.take() {
            assert!(s.terminate().success());
        }
        self.launch().await;
    }

    /// The `sipsentry` command line in the same directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(binary::BIN)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// A call from `from` (a From header value, display name and URI); the
    /// final response code the trunk got, and the INVITE as the PBX saw it
    /// when it was relayed.
    pub async fn call(&self, uac: &Udp, tag: &str, from: &str) -> (u16, Option<String>) {
        self.call_with(uac, tag, from, "").await
    }

    /// As [`Operator::call`], with `extra` header lines (each ending in
    /// CRLF) in the INVITE.
    pub async fn call_with(
        &self,
        uac: &Udp,
        tag: &str,
        from: &str,
        extra: &str,
    ) -> (u16, Option<String>) {
        let branch = format!("z9hG4bKop{tag}");
        uac.send(self.sip, &invite(uac.addr, "UDP", &branch, from, extra))
            .await;
        let call_id = format!("{branch}@test");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut code = 0;
        while let Some((m, _)) = uac
            .recv_within(deadline - tokio::time::Instant::now())
            .await
        {
            if m.contains(&call_id) && status(&m) >= 200 {
                code = status(&m);
                break;
            }
        }
        let relayed = self
            .pbx_seen
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.contains(&call_id))
            .cloned();
        (code, relayed)
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A console page's HTML, with the session `cookie`.
    pub async fn page(&self, path: &str, cookie: &str) -> String {
        self.http
            .get(format!("{}{path}", self.admin))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Logs in through the form; the session cookie and the page's CSRF token.
    pub async fn login(&self) -> (String, String) {
        let r = self
            .http
            .post(format!("{}/login", self.admin))
            .form(&[("token", TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let cookie = cookie.split(';').next().unwrap().to_string();
        let page = self.page("/lists", &cookie).await;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a CSRF field")
            .to_string();
        (cookie, csrf)
    }

    /// GET with the bearer token: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .auth(self.http.get(format!("{}{path}", self.admin)))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A JSON POST with the bearer token: status and body as JSON.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .auth(self.http.post(format!("{}{path}", self.admin)))
            .json(&body)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.auth(self.http.delete(format!("{}{path}", self.admin)))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The history row of the call [`Operator::call`] made with `tag`,
    /// waiting for the writer (and, with `with_final`, for the PBX's final
    /// response).
    pub async fn row(&self, tag: &str, with_final: bool) -> serde_json::Value {
        let call_id = format!("z9hG4bKop{tag}@test");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (code, body) = self.get("/api/v1/history?limit=100").await;
            if code == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if let Some(row) = v["rows"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|r| r["call_id"] == call_id.as_str()))
                    && (!with_final || !row["final_code"].is_null())
                {
                    return row.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no history row for call {tag}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}
