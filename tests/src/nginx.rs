//! Debian's nginx as a caching reverse proxy in front of a log: the standard HTTP cache that
//! the log's immutable full tiles are meant for. Its configuration, state and logs live in a
//! temporary directory; it is stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx that caches what `upstream` marks cacheable.
pub struct Nginx {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Nginx {
        let bin = Path::new("/usr/sbin/nginx");
        assert!(
            bin.exists(),
            "no nginx: run scripts/test.sh, which installs Debian's nginx"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        // As a log operator would put it in front of the log: the cache keeps what the log
        // says it may (full tiles for a year, never the checkpoint), and says whether it hit.
        let conf = format!(
            r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=log:10m max_size=1g inactive=365d use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache log;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let nginx = Nginx { child, url, dir };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// What nginx logged as errors, for a failing test's message.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (no master): killing it leaves nothing behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
