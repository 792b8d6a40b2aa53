//! The dashboard's benchmark (ignored: run by `scripts/bench-dashboard.sh` in release, over a
//! large index; figures in docs/benchmarks.md). For the overview and a path's page it prints
//! the server's time to the whole page (p50, p99 over sequential requests) and, in a real
//! headless Chromium, the time from navigation to the first contentful paint.

use std::time::Instant;

use reprolog_tests::browser::Browser;
use reprolog_tests::get_json;

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    (at(0.5), at(0.99))
}

#[test]
#[ignore = "a benchmark: scripts/bench-dashboard.sh"]
fn time_to_first_render() {
    let url = std::env::var("EXPLORER_URL").expect("EXPLORER_URL: the explorer to measure");
    let (_, status) = get_json(&format!("{url}/api/v1/status"));
    println!(
        "index: {} claims, {} paths",
        status["totals"]["entries"], status["totals"]["paths"]
    );
    // A path compared by every builder: the largest page of claims the index has.
    let (_, found) = get_json(&format!("{url}/api/v1/disagreements?limit=1"));
    let path = found["paths"][0]["store_path"]
        .as_str()
        .expect("an unreproduced path in the index");
    let hash = &path.rsplit('/').next().unwrap()[..32];
    let pages = [
        ("overview", "/".to_owned()),
        ("path page", format!("/paths/{hash}")),
    ];
    let browser = Browser::start(1280, 800);
    for (name, page) in &pages {
        let page_url = format!("{url}{page}");
        let mut server = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            let body = ureq::get(&page_url).call().unwrap().into_string().unwrap();
            server.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(body.contains("</html>"));
        }
        let (p50, p99) = percentiles(server);
        let (mut paint, mut loaded) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            browser.goto(&page_url);
            // Paint timing is recorded just after the frame, so it is waited for.
            let ms = std::cell::Cell::new(-1.0);
            browser.wait_until("the first contentful paint", |b| {
                ms.set(b.script(
                    "const p = performance.getEntriesByName('first-contentful-paint')[0];
                     return p ? p.startTime : -1;",
                ));
                ms.get() >= 0.0
            });
            paint.push(ms.get());
            loaded.push(browser.script::<f64>(
                "return performance.getEntriesByType('navigation')[0].loadEventEnd;",
            ));
        }
        let (paint50, paint99) = percentiles(paint);
        let (load50, _) = percentiles(loaded);
        println!(
            "{name:<10} server p50 {p50:.1} ms, p99 {p99:.1} ms; in Chromium: first contentful paint p50 {paint50:.0} ms, p99 {paint99:.0} ms, load p50 {load50:.0} ms"
        );
    }
}
