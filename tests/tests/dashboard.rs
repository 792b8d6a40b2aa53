//! The explorer's dashboard in a real headless Chromium, over the real-Nix fixture of the
//! explorer's tests (two builders, one diverging path, a log with a witness): what each page
//! shows equals what the API answers, search works as you type, a pasted or uploaded closure
//! gets its report, and every page is usable on a phone-sized screen. Screenshots of each page
//! go to `target/screenshots/` for review.

use reprolog_tests::browser::Browser;
use reprolog_tests::explored::{hash_of, Explorer, TwoBuilders};
use reprolog_tests::{get, get_json};
use serde_json::Value;

/// What every page must have for a screen reader and a keyboard: one `h1`, a label for every
/// form control, a caption for every table, and a title for every chart.
fn check_accessible(b: &Browser, page: &str) {
    let problems: Vec<String> = b.script(
        r#"
        const problems = [];
        if (document.documentElement.lang !== "en") problems.push("no lang");
        if (document.querySelectorAll("h1").length !== 1) problems.push("not one h1");
        for (const c of document.querySelectorAll("input, select, textarea")) {
          if (c.labels.length === 0) problems.push("unlabelled " + (c.id || c.name));
        }
        for (const t of document.querySelectorAll("table")) {
          if (!t.querySelector("caption")) problems.push("table without caption " + t.id);
        }
        for (const s of document.querySelectorAll("svg.chart")) {
          const ids = (s.getAttribute("aria-labelledby") || "").split(" ");
          if (s.getAttribute("role") !== "img" || !document.getElementById(ids[0]))
            problems.push("chart without a title " + s.id);
        }
        if (!document.querySelector("a.skip[href='#main']")) problems.push("no skip link");
        // WCAG 2 contrast of every piece of text against the background it is drawn on.
        const channels = (c) => c.match(/[\d.]+/g).map(Number);
        const luminance = (c) => {
          const [r, g, b] = channels(c).slice(0, 3).map((v) => {
            v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
          });
          return 0.2126 * r + 0.7152 * g + 0.0722 * b;
        };
        const background = (e) => {
          for (; e; e = e.parentElement) {
            const c = getComputedStyle(e).backgroundColor;
            const v = channels(c);
            if (v.length < 4 || v[3] > 0) return c;
          }
          return "rgb(255, 255, 255)";
        };
        for (const e of document.querySelectorAll("body *")) {
          if (e.closest("svg") || e.getClientRects().length === 0) continue;
          const text = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
          if (!text) continue;
          const style = getComputedStyle(e);
          const [a, b] = [luminance(style.color), luminance(background(e))];
          const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
          const size = parseFloat(style.fontSize);
          const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
          if (ratio < (large ? 3 : 4.5))
            problems.push(`contrast ${ratio.toFixed(2)} of ${e.tagName}.${e.className} "${e.textContent.trim().slice(0, 30)}"`);
        }
        return problems;
        "#,
    );
    assert!(problems.is_empty(), "{page}: {problems:?}");
}

/// The height on screen of the smallest label of any chart on the page, in CSS pixels.
fn smallest_chart_label(b: &Browser) -> f64 {
    b.script(
        "let m = 1e9;
         for (const t of document.querySelectorAll('svg.chart text')) {
           const h = t.getBoundingClientRect().height;
           if (h > 0) m = Math.min(m, h);
         }
         return m;",
    )
}

fn number(b: &Browser, css: &str) -> u64 {
    let text = b.text(css);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{css} is {text:?}, not a number"))
}

/// The real-Nix fixture, and an explorer that has verified all of it; returns its status.
fn explored(d: &std::path::Path, tag: &str) -> (TwoBuilders, Explorer, Value) {
    let fixture = TwoBuilders::start(d, tag);
    let db = format!("sqlite://{}", d.join("index").join("explorer.db").display());
    let e = Explorer::start(d, &fixture.log.policy, &db);
    let status = e.wait_verified(TwoBuilders::SIZE);
    (fixture, e, status)
}

#[test]
fn the_dashboard_shows_what_the_api_answers_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (fixture, e, status) = explored(d, "dashboard");
    let url = &e.url;
    let b = Browser::start(1280, 800);

    // Overview: the totals are the API's, the log is followed and cosigned, and each chart
    // has one mark per bucket of the API's time series.
    b.goto(&format!("{url}/"));
    for name in [
        "entries",
        "paths",
        "builders",
        "reproduced",
        "unreproduced",
        "one_builder",
    ] {
        let css = format!("#total-{}", name.replace('_', "-"));
        assert_eq!(
            Some(number(&b, &css)),
            status["totals"][name].as_u64(),
            "{name}: {status}"
        );
    }
    let log_row = b.text("#logs tbody tr");
    assert!(
        log_row.contains("example.com/explored") && log_row.contains("following"),
        "{log_row}"
    );
    assert!(
        log_row.contains(&format!("size {}", TwoBuilders::SIZE)),
        "{log_row}"
    );
    for bucket in ["day", "hour"] {
        b.goto(&format!("{url}/?bucket={bucket}"));
        let (_, series) = get_json(&format!("{url}/api/v1/timeseries?bucket={bucket}"));
        let buckets = series["buckets"].as_array().unwrap();
        assert!(!buckets.is_empty(), "{series}");
        assert_eq!(
            b.count("#overview-entries .mark"),
            buckets.len(),
            "{series}"
        );
        let compared = buckets.iter().filter(|x| x["compared"] != 0).count();
        assert_eq!(b.count("#overview-rate .mark"), compared, "{series}");
        // Hovering over a mark says its numbers.
        let hover: String =
            b.script("return document.querySelector('#overview-entries .mark title').textContent;");
        let first = buckets[0]["entries"].as_u64().unwrap();
        assert!(
            hover.ends_with(&format!(": {first} entries logged")),
            "{hover}"
        );
    }
    b.goto(&format!("{url}/"));
    assert_eq!(
        b.attribute("footer a.json", "href").as_deref(),
        Some("/api/v1/status")
    );
    check_accessible(&b, "overview");
    assert!(
        smallest_chart_label(&b) >= 12.0,
        "{}",
        smallest_chart_label(&b)
    );
    b.screenshot("overview");

    // Builders: the heatmap cell for the two builders is the API's agreement.
    let (_, agreement) = get_json(&format!("{url}/api/v1/agreement"));
    let pair = &agreement["pairs"][0];
    assert_eq!(
        (pair["common"].as_u64(), pair["agree"].as_u64()),
        (Some(2), Some(1))
    );
    b.goto(&format!("{url}/builders"));
    assert_eq!(
        b.count("#agreement td.heat"),
        2,
        "both halves of the matrix"
    );
    assert_eq!(
        b.attribute("#agreement td.heat", "data-agree"),
        Some(pair["agree"].to_string())
    );
    assert_eq!(
        b.attribute("#agreement td.heat", "data-common"),
        Some(pair["common"].to_string())
    );
    let cell = b.text("#agreement td.heat");
    assert!(cell.contains("50%") && cell.contains("1/2"), "{cell}");
    assert_eq!(b.count("#builders tbody tr"), 2);
    check_accessible(&b, "builders");
    b.screenshot("builders");

    // Search finds the diverging path as its name is typed, without leaving the page.
    b.goto(&format!("{url}/search"));
    b.type_into("#q", &format!("stamp-{}", fixture.tag));
    b.wait_until("the diverging path in the results", |b| {
        b.texts("#results a.path")
            .iter()
            .any(|t| t == &fixture.stamp)
    });
    assert_eq!(
        b.texts("#results a.path"),
        std::slice::from_ref(&fixture.stamp)
    );
    assert_eq!(b.text("#results .verdict"), "unreproduced");
    assert!(b.current_url().contains("/search"), "{}", b.current_url());
    check_accessible(&b, "search");
    b.screenshot("search");
    // By keyboard alone: Tab from the field to the button, on to the result, Enter opens it.
    const TAB: &str = "\u{E004}";
    const ENTER: &str = "\u{E007}";
    let focused = |b: &Browser| -> String {
        b.script("const e = document.activeElement; return e.tagName + ' ' + e.textContent;")
    };
    b.type_into("#q", TAB);
    assert_eq!(focused(&b), "BUTTON Search");
    b.type_into("form.search button", TAB);
    assert_eq!(focused(&b), format!("A {}", fixture.stamp));
    b.type_into("#results a.path", ENTER);
    b.wait_until("the path's page, opened by keyboard", |b| {
        b.current_url().contains(hash_of(&fixture.stamp))
    });

    // A path's page: both claims, the verdict, and the commands to rebuild and compare.
    b.goto(&format!("{url}/paths/{}", hash_of(&fixture.stamp)));
    assert_eq!(b.text("#verdict"), "unreproduced");
    let claims = b.texts("#claims tbody tr");
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert!(claims[0].contains("explorer-b1") && claims[1].contains("explorer-b2"));
    let (_, answer) = get_json(&format!("{url}/api/v1/paths/{}", hash_of(&fixture.stamp)));
    for (shown, claim) in claims.iter().zip(answer["claims"].as_array().unwrap()) {
        assert!(
            shown.contains(claim["nar_hash"].as_str().unwrap()),
            "{shown} {claim}"
        );
    }
    let rebuild = b.text("#rebuild");
    assert!(rebuild.contains("nix-build --check"), "{rebuild}");
    assert!(rebuild.contains("nix build --rebuild"), "{rebuild}");
    assert!(rebuild.contains(&fixture.stamp), "{rebuild}");
    let compare = b.text("#compare");
    assert!(
        compare.contains("CACHE_A: a binary cache with the result of explorer-b1")
            && compare.contains("CACHE_B: one with the result of explorer-b2")
            && compare.contains("diffoscope a.nar b.nar")
            && compare.contains(&fixture.stamp),
        "{compare}"
    );
    check_accessible(&b, "path");
    b.screenshot("path");

    // Disagreements, filtered by a builder: the diverging path only.
    b.goto(&format!("{url}/disagreements?builder=explorer-b1"));
    assert_eq!(
        b.texts("#disagreements tbody th"),
        std::slice::from_ref(&fixture.stamp)
    );
    check_accessible(&b, "disagreements");
    b.screenshot("disagreements");

    // A pasted closure: exactly one unreproduced path.
    let closure = format!("{}\n{}\n", fixture.same, fixture.stamp);
    b.goto(&format!("{url}/report"));
    b.type_into("#paths", &closure);
    b.click("form.report button[type=submit]");
    b.wait_until("the report", |b| b.count("#summary") == 1);
    assert_eq!(number(&b, "#count-unreproduced"), 1);
    assert_eq!(number(&b, "#count-reproduced"), 1);
    assert_eq!(b.count("#report tbody tr.unreproduced"), 1);
    assert_eq!(b.text("#report tbody tr.unreproduced th"), fixture.stamp);
    check_accessible(&b, "report");
    b.screenshot("report");

    // The same closure uploaded as `nix path-info -r` prints it, with a path not logged.
    let listing = d.join("closure.txt");
    let unlogged = format!("/nix/store/{}-unlogged", "0".repeat(32));
    std::fs::write(&listing, format!("{closure}{unlogged}\n")).unwrap();
    b.goto(&format!("{url}/report"));
    b.upload("#file", &listing);
    b.wait_until("the file read into the form", |b| {
        b.script::<String>("return document.getElementById('paths').value;")
            .contains("unlogged")
    });
    b.click("form.report button[type=submit]");
    b.wait_until("the report", |b| b.count("#summary") == 1);
    assert_eq!(number(&b, "#count-unreproduced"), 1);
    assert_eq!(number(&b, "#count-not-logged"), 1);

    // On a phone: nothing scrolls sideways, and what matters is still there.
    b.resize(390, 844);
    let pages = [
        ("overview", "/".to_owned()),
        ("builders", "/builders".to_owned()),
        ("disagreements", "/disagreements".to_owned()),
        ("path", format!("/paths/{}", hash_of(&fixture.stamp))),
        ("search", format!("/search?q=stamp-{}", fixture.tag)),
        ("report", "/report".to_owned()),
    ];
    for (name, path) in &pages {
        b.goto(&format!("{url}{path}"));
        assert!(
            !b.overflows_horizontally(),
            "{name} scrolls sideways at 390 px: {:?}",
            b.elements_past_right_edge()
        );
        if ["overview", "builders"].contains(name) {
            let label = smallest_chart_label(&b);
            assert!(
                (10.0..1e9).contains(&label),
                "{name}: chart labels {label} px high"
            );
        }
        b.screenshot(&format!("{name}-phone"));
    }
    b.goto(&format!("{url}/"));
    assert_eq!(
        Some(number(&b, "#total-unreproduced")),
        status["totals"]["unreproduced"].as_u64()
    );
}

/// Without a script, every page is plain HTML drawn on the server: search answers a submitted
/// form, and bad input gets a page that says why, with the API's status.
#[test]
fn the_pages_work_without_javascript_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (fixture, e, _) = explored(d, "nojs");
    let url = &e.url;

    let page = |path: &str| -> (u16, String) {
        let (code, body) = get(&format!("{url}{path}"));
        (code, String::from_utf8(body).unwrap())
    };
    let (code, html) = page(&format!("/search?q=stamp-{}", fixture.tag));
    assert_eq!(code, 200);
    assert!(html.contains(&fixture.stamp), "{html}");
    assert!(!html.contains(&fixture.same), "{html}");
    let (code, html) = page("/");
    assert_eq!(code, 200);
    assert!(
        html.contains("<svg") && html.contains("class=\"mark bar\""),
        "{html}"
    );
    // Uploading a file takes the script, so without it the field is not offered.
    let (_, html) = page("/report");
    assert!(html.contains(r#"<div id="upload" hidden>"#), "{html}");
    // The assets are served from the binary, with their types.
    for (asset, kind) in [
        ("/assets/style.css", "text/css"),
        ("/assets/dashboard.js", "text/javascript"),
    ] {
        let response = ureq::get(&format!("{url}{asset}")).call().unwrap();
        assert_eq!(response.content_type(), kind);
    }
    // No page loads anything from elsewhere: every script, stylesheet and link is local.
    for path in ["/", "/builders", "/disagreements", "/search", "/report"] {
        let (_, html) = page(path);
        for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!html.contains(external), "{path}: {external}: {html}");
        }
    }

    for (path, code, why) in [
        ("/paths/not-a-hash", 400, "32 nix32 characters"),
        (
            &format!("/paths/{}", "0".repeat(32)),
            404,
            "no claim about that store path",
        ),
        (
            &format!("/search?q={}", "x".repeat(201)),
            400,
            "1 to 200 characters",
        ),
        ("/disagreements?since=yesterday", 400, "since: a time"),
        ("/?bucket=week", 400, "bucket: hour or day"),
    ] {
        let (got, html) = page(path);
        assert_eq!(got, code, "{path}: {html}");
        assert!(html.contains(why), "{path}: {html}");
        assert!(html.contains("<h1>"), "{path}: not a page: {html}");
    }
    let (code, body) = reprolog_tests::post_raw(
        &format!("{url}/report"),
        "application/x-www-form-urlencoded",
        b"paths=not-a-store-path",
    );
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("is not a store path"));
    // The index is as it was.
    let (_, status) = get_json(&format!("{url}/api/v1/status"));
    assert_eq!(status["totals"]["entries"], Value::from(4), "{status}");
}
