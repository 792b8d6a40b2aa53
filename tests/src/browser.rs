//! A real headless Chromium, driven over W3C WebDriver through Debian's chromedriver, so that the
//! end-to-end tests can check the explorer's dashboard as a person's browser renders and runs it.
//!
//! The tests are synchronous, so the async `fantoccini` client is wrapped: every call is a
//! `block_on` on a runtime the `Browser` owns. Failures panic with what was looked for and on
//! which page, since this is test code and the panic is the test's report.

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};

/// How long an element, chromedriver's port or a condition is waited for.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

const INSTALL_HINT: &str =
    "run scripts/test.sh, which installs Debian's chromium and chromium-driver";

/// A headless Chromium session. Dropping it ends the session and chromedriver.
pub struct Browser {
    client: Client,
    rt: tokio::runtime::Runtime,
    _driver: Driver,
    /// `TMPDIR` for chromedriver and Chromium: their profiles and the shared memory that
    /// `--disable-dev-shm-usage` moves out of /dev/shm, a few MiB a run that they do not all
    /// remove themselves. Declared after `_driver`, so it is removed once chromedriver is gone.
    _tmp: tempfile::TempDir,
}

/// chromedriver as a child process, stopped and reaped when dropped, so that a panic while
/// starting the session does not leave it running.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver's own way out also quits a browser whose session could not be closed;
        // killing chromedriver alone would leave that browser running.
        let _ = ureq::get(&format!("http://127.0.0.1:{}/shutdown", self.port))
            .timeout(Duration::from_secs(5))
            .call();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session at this
    /// window size.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = find_program("chromium")
            .unwrap_or_else(|| panic!("no `chromium` on PATH: {INSTALL_HINT}"));
        let chromedriver = find_program("chromedriver")
            .unwrap_or_else(|| panic!("no `chromedriver` on PATH: {INSTALL_HINT}"));

        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let tmp = tempfile::tempdir().expect("a temporary directory for the browser");
        let mut driver = Driver {
            child: Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .env("TMPDIR", tmp.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display())),
            port,
        };
        // Connecting before chromedriver listens fails outright rather than waiting.
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited ({status}) before listening on port {port}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {WAIT:?}"
            );
            std::thread::sleep(POLL);
        }

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Chromium refuses to run as root with its sandbox, and the tests run as root.
                    "--no-sandbox",
                    "--disable-gpu",
                    // Containers often have a tiny /dev/shm, which crashes renderers.
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let client = rt
            .block_on(
                // Plain http: chromedriver is on loopback, so the client needs no TLS stack.
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| {
                panic!("starting a headless Chromium session through chromedriver: {e}")
            });
        Browser {
            client,
            rt,
            _driver: driver,
            _tmp: tmp,
        }
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.run(
            &format!("resizing the window to {width}x{height}"),
            self.client.set_window_size(width, height),
        )
    }

    pub fn goto(&self, url: &str) {
        if let Err(e) = self.rt.block_on(self.client.goto(url)) {
            panic!("opening {url}: {e}");
        }
    }

    pub fn current_url(&self) -> String {
        self.run("reading the current URL", self.client.current_url())
            .to_string()
    }

    /// Waits (up to 10 s) for an element matching the CSS selector and returns its visible text.
    pub fn text(&self, css: &str) -> String {
        let element = self.wait_for(css);
        self.run(&format!("reading the text of `{css}`"), element.text())
    }

    /// Visible texts of every element matching (no wait).
    pub fn texts(&self, css: &str) -> Vec<String> {
        let what = format!("reading the texts of `{css}`");
        self.find_all(css)
            .iter()
            .map(|element| self.run(&what, element.text()))
            .collect()
    }

    /// How many elements match (no wait).
    pub fn count(&self, css: &str) -> usize {
        self.find_all(css).len()
    }

    /// Waits (up to 10 s) for the element and returns its attribute, `None` if it has none.
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.wait_for(css);
        self.run(
            &format!("reading attribute `{name}` of `{css}`"),
            element.attr(name),
        )
    }

    /// Waits (up to 10 s) for the element, clicks it.
    pub fn click(&self, css: &str) {
        let element = self.wait_for(css);
        self.run(&format!("clicking `{css}`"), element.click())
    }

    /// Waits (up to 10 s) for the element and types `text` into it key by key, so that the
    /// page's input events fire as they would for a person.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css);
        self.run(
            &format!("typing {text:?} into `{css}`"),
            element.send_keys(text),
        )
    }

    /// Sets a file input's file.
    pub fn upload(&self, css: &str, file: &Path) {
        // WebDriver takes the file as an absolute path typed into the input.
        let file = file
            .canonicalize()
            .unwrap_or_else(|e| panic!("the file to upload, {}: {e}", file.display()));
        let file = file.to_str().expect("a UTF-8 path");
        let element = self.wait_for(css);
        self.run(
            &format!("uploading {file} through `{css}`"),
            element.send_keys(file),
        )
    }

    /// Waits (up to 10 s) until `check(self)` is true, polling every 50 ms; panics with `what`
    /// on timeout.
    pub fn wait_until(&self, what: &str, check: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check(self) {
            if Instant::now() >= deadline {
                panic!("waited {WAIT:?} on {} for {what}", self.here());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs synchronous JavaScript (`return …;`) and deserializes its result.
    pub fn script<T: serde::de::DeserializeOwned>(&self, js: &str) -> T {
        let value = self.run(
            &format!("running script `{js}`"),
            self.client.execute(js, Vec::new()),
        );
        serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            panic!(
                "script `{js}` on {} returned {value}, not a {}: {e}",
                self.here(),
                std::any::type_name::<T>()
            )
        })
    }

    /// Saves a PNG of the viewport to `target/screenshots/<name>.png` (under `CARGO_TARGET_DIR`
    /// when set) and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run(
            &format!("taking screenshot {name:?}"),
            self.client.screenshot(),
        );
        let dir = target_dir().join("screenshots");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// The elements that reach past the viewport's right edge (tag, class, id, right edge),
    /// the first few: what to look at when a page scrolls sideways. Those inside a container
    /// that scrolls are listed too.
    pub fn elements_past_right_edge(&self) -> Vec<String> {
        self.script(
            r#"const w = document.documentElement.clientWidth, out = [];
            for (const e of document.querySelectorAll("body *")) {
              const r = e.getBoundingClientRect();
              if (r.right > w + 0.5) out.push(`${e.tagName}.${e.className}#${e.id} ${r.right}`);
            }
            return out.slice(0, 12);"#,
        )
    }

    /// Whether the page scrolls sideways, which a layout for phones must not do.
    pub fn overflows_horizontally(&self) -> bool {
        // clientWidth, not innerWidth: the latter counts the vertical scrollbar, so a page
        // wider than its viewport by less than that would pass.
        self.script("const d = document.documentElement; return d.scrollWidth > d.clientWidth;")
    }

    fn wait_for(&self, css: &str) -> Element {
        let found = self.rt.block_on(
            self.client
                .wait()
                .at_most(WAIT)
                .every(POLL)
                .for_element(Locator::Css(css)),
        );
        found.unwrap_or_else(|e| {
            panic!(
                "no element matches `{css}` on {} within {WAIT:?}: {e}",
                self.here()
            )
        })
    }

    fn find_all(&self, css: &str) -> Vec<Element> {
        self.run(
            &format!("finding `{css}`"),
            self.client.find_all(Locator::Css(css)),
        )
    }

    /// Runs one WebDriver command; on failure, panics saying what was being done and where.
    fn run<T>(&self, what: &str, command: impl Future<Output = Result<T, CmdError>>) -> T {
        match self.rt.block_on(command) {
            Ok(value) => value,
            Err(e) => panic!("{what} on {}: {e}", self.here()),
        }
    }

    /// The current URL for a panic message, which must not itself panic.
    fn here(&self) -> String {
        match self.rt.block_on(self.client.current_url()) {
            Ok(url) => url.to_string(),
            Err(e) => format!("<unknown page: {e}>"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session makes chromedriver quit Chromium; killing chromedriver alone
        // would leave the browser running. Bounded, so a wedged driver cannot hang the test.
        let client = self.client.clone();
        let _ = self.rt.block_on(async {
            // Inside the runtime: the timer must be made there.
            tokio::time::timeout(Duration::from_secs(5), client.close()).await
        });
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (a relative one taken from the
/// workspace root, where cargo is run), else the workspace's `target`.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace");
    match std::env::var_os("CARGO_TARGET_DIR") {
        // `join` keeps an absolute directory as it is.
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}
