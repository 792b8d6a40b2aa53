//! The browser harness against a real headless Chromium: a small page served over loopback
//! answers every call of `reprolog_tests::browser::Browser` as a person's browser would.

use reprolog_tests::browser::Browser;
use reprolog_tests::serve_http;

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title></head>
<body>
<h1 data-kind="fixture">Harness</h1>
<ul><li class="item">one</li><li class="item">two</li><li class="item">three</li></ul>
<input id="name"><p id="out"></p>
<input id="file" type="file"><p id="picked"></p>
<button id="go" onclick="document.getElementById('clicked').textContent = 'clicked'">Go</button>
<p id="clicked"></p>
WIDE
<script>
  document.getElementById('name').addEventListener('input', e => {
    document.getElementById('out').textContent = 'hello ' + e.target.value;
  });
  document.getElementById('file').addEventListener('change', e => {
    document.getElementById('picked').textContent = e.target.files[0].name;
  });
</script>
</body></html>"#;

#[test]
fn the_harness_drives_a_real_chromium() {
    let base = serve_http(|path| match path {
        "/" => (200, PAGE.replace("WIDE", "").into_bytes()),
        "/wide" => (
            200,
            PAGE.replace("WIDE", r#"<div style="width: 2000px">wide</div>"#)
                .into_bytes(),
        ),
        _ => (404, Vec::new()),
    });
    let browser = Browser::start(1280, 800);

    browser.goto(&format!("{base}/"));
    assert_eq!(browser.current_url(), format!("{base}/"));
    assert_eq!(browser.text("h1"), "Harness");
    assert_eq!(browser.texts("li.item"), ["one", "two", "three"]);
    assert_eq!(browser.count("li.item"), 3);
    assert_eq!(browser.count("li.absent"), 0);
    assert_eq!(
        browser.attribute("h1", "data-kind").as_deref(),
        Some("fixture")
    );
    assert_eq!(browser.attribute("h1", "data-absent"), None);

    browser.type_into("#name", "reprolog");
    browser.wait_until("the typed name to be echoed", |b| {
        b.text("#out") == "hello reprolog"
    });

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evidence.txt");
    std::fs::write(&file, "a file to upload").unwrap();
    browser.upload("#file", &file);
    browser.wait_until("the uploaded file's name to appear", |b| {
        b.text("#picked") == "evidence.txt"
    });

    assert_eq!(browser.text("#clicked"), "");
    browser.click("#go");
    assert_eq!(browser.text("#clicked"), "clicked");

    assert_eq!(browser.script::<u64>("return 6 * 7;"), 42);
    assert_eq!(
        browser.script::<String>("return document.title;"),
        "harness"
    );

    browser.resize(390, 844);
    assert_eq!(browser.script::<u32>("return window.innerWidth;"), 390);
    assert!(!browser.overflows_horizontally());
    browser.goto(&format!("{base}/wide"));
    assert!(browser.overflows_horizontally());

    let shot = browser.screenshot("browser_harness");
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        shot.display()
    );
}
