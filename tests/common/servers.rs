#![allow(dead_code)] // shared by the cluster tests; each uses part of it
//! Real Redis and PostgreSQL servers for the cluster tests, started on
//! loopback on their own ports with their own data directories, and stopped
//! (and removed) when dropped. Nothing runs as a system service.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary::{free_port, installed};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `redis-server` on `127.0.0.1:port`, no persistence.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `requirepass`, when set.
    password: Option<String>,
    /// A TLS port beside the plain one, with this certificate and key.
    pub tls_port: Option<u16>,
    tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Redis {
    /// `None` when redis-server is not installed (outside CI only).
    pub fn start() -> Option<Redis> {
        Self::start_with(None)
    }

    /// A server with a TLS port too (`tls_port`), serving `cert` and `key`
    /// (PEM); the plain port stays for the test's own commands.
    pub fn start_tls(cert: &str, key: &str) -> Option<Redis> {
        if !installed("redis-server", "redis-server") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        let mut r = Redis {
            port: free_port(),
            dir,
            child: None,
            password: None,
            tls_port: Some(free_port()),
            tls_files: Some((c, k)),
        };
        r.spawn();
        Some(r)
    }

    /// A server that requires `password` (`AUTH`).
    pub fn start_with(password: Option<&str>) -> Option<Redis> {
        if !installed("redis-server", "redis-server") {
            return None;
        }
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            password: password.map(str::to_string),
            tls_port: None,
            tls_files: None,
        };
        r.spawn();
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        if let (Some(port), Some((cert, key))) = (self.tls_port, &self.tls_files) {
            cmd.args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.command("PING").is_some_and(|r| r.starts_with("+PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// One inline command; the raw reply.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let auth = self
            .password
            .as_ref()
            .map(|pw| format!("AUTH {pw}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("{auth}{line}\r\n").as_bytes()).ok()?;
        if !auth.is_empty() {
            // The AUTH reply first.
            let mut ok = [0u8; 5];
            s.read_exact(&mut ok).ok()?;
        }
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Kills the server (its data goes with it: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of Debian's PostgreSQL server programs (the newest major).
fn pg_bin() -> Option<PathBuf> {
    let mut majors: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    majors.sort();
    majors.pop()
}

/// A PostgreSQL cluster of its own (initdb in a temporary directory) on
/// `127.0.0.1:port`, user `sipsentry` with password [`Postgres::PASSWORD`].
/// PostgreSQL refuses to run as root: as root it runs as `postgres`.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The user that owns the data directory and runs the server.
    run_as: Option<&'static str>,
    /// TLS on, required of the product's user: (certificate, key) PEM.
    tls: Option<(String, String)>,
}

impl Postgres {
    pub const PASSWORD: &'static str = "pg-test-password";

    /// `None` when PostgreSQL is not installed (outside CI only).
    pub fn start() -> Option<Postgres> {
        Self::start_with(None)
    }

    /// A server that accepts the product's user over TLS only, with this
    /// certificate and key (PEM).
    pub fn start_tls(cert: &str, key: &str) -> Option<Postgres> {
        Self::start_with(Some((cert.to_string(), key.to_string())))
    }

    fn start_with(tls: Option<(String, String)>) -> Option<Postgres> {
        let bin = pg_bin();
        if bin.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL is not installed (.ci/run installs postgresql)"
            );
            eprintln!("skipping: PostgreSQL not installed (apt-get install postgresql)");
            return None;
        }
        let root = is_root();
        let base = std::env::temp_dir().join(format!(
            "sipsentry-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&base).unwrap();
        let pg = Postgres {
            port: free_port(),
            dir: base,
            bin: bin.unwrap(),
            run_as: root.then_some("postgres"),
            tls,
        };
        pg.init();
        pg.start_server();
        pg.sql(&format!(
            "CREATE ROLE sipsentry LOGIN PASSWORD '{}'",
            Self::PASSWORD
        ));
        pg.sql("CREATE DATABASE sipsentry OWNER sipsentry");
        Some(pg)
    }

    /// The URL a node is configured with (the password comes from the
    /// environment, `password_env`).
    pub fn url(&self) -> String {
        format!("postgres://sipsentry@127.0.0.1:{}/sipsentry", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    fn init(&self) {
        if let Some(user) = self.run_as {
            let ok = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(&self.dir)
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the PostgreSQL test directory");
        }
        let data = self.data();
        let out = self.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(out.status.success(), "initdb: {}", stderr(&out));
        // Password authentication over TCP for the product's user, as in a
        // deployment; the superuser is trusted on the socket for the test.
        let product = if self.tls.is_some() {
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        } else {
            "host all all 127.0.0.1/32 scram-sha-256\n"
        };
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all postgres trust\nhost all postgres 127.0.0.1/32 trust\n{product}"),
        )
        .unwrap();
        if let Some((cert, key)) = &self.tls {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(data.join("server.crt"), cert).unwrap();
            std::fs::write(data.join("server.key"), key).unwrap();
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            if let Some(user) = self.run_as {
                let ok = Command::new("chown")
                    .arg(format!("{user}:{user}"))
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
        }
    }

    fn start_server(&self) {
        let data = self.data();
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        if self.tls.is_some() {
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = self.dir.join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            stderr(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown); the data stays.
    pub fn stop(&self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts it again on the same data and port.
    pub fn restart(&self) {
        self.start_server();
    }

    /// Runs SQL as the superuser in the `postgres` database; the output
    /// rows, `|`-separated.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// SQL in the product's database.
    pub fn query(&self, sql: &str) -> String {
        self.sql_in("sipsentry", sql)
    }

    fn sql_in(&self, db: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            Path::new("psql").to_path_buf()
        };
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&psql);
                c
            }
            None => Command::new(&psql),
        };
        let out = cmd
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
