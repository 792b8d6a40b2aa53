//! The dashboard's charts, drawn on the server as SVG: no script or network is needed to see
//! them. Each has axes with units, a legend, and a title and description for screen readers;
//! the pages put a table of the same numbers beside each. The view box is narrow on purpose:
//! scaled down to a phone's width, its text stays readable.

use maud::{html, Markup};

const WIDTH: f64 = 420.0;
const HEIGHT: f64 = 230.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 42.0;

/// How a series is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line through one point per bucket.
    Line,
    /// One bar per bucket.
    Bars,
}

/// One bucket's value, and what hovering over it says.
pub struct Point {
    /// The bucket's start, in seconds since the epoch.
    pub start: u64,
    pub value: f64,
    pub label: String,
}

/// A chart of one series over time buckets.
pub struct TimeChart<'a> {
    /// Names the chart for screen readers; unique on its page.
    pub id: &'a str,
    pub title: &'a str,
    /// The series' name, shown in the legend.
    pub legend: &'a str,
    /// The y axis' unit, e.g. `%` or `entries`.
    pub unit: &'a str,
    pub bucket_seconds: u64,
    pub style: Style,
    /// The top of the y axis when fixed (100 for a percentage); else from the data.
    pub y_max: Option<f64>,
    pub points: Vec<Point>,
}

/// A step of 1, 2 or 5 times a power of ten that cuts `max` into at most five ticks.
fn tick_step(max: f64) -> f64 {
    let rough = (max / 5.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude)
        .max(1.0)
}

fn number(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A bucket's start as the x axis shows it: the day, and the hour for hourly buckets (UTC).
pub fn bucket_label(start: u64, bucket_seconds: u64) -> String {
    let time = reprolog_verifier::dating::rfc3339(start);
    // YYYY-MM-DDTHH:MM:SSZ
    if bucket_seconds < 86_400 {
        format!("{} {}h", &time[5..10], &time[11..13])
    } else {
        time[5..10].to_owned()
    }
}

/// The chart, as an inline `<svg>`.
pub fn time_chart(chart: &TimeChart) -> Markup {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let first = chart.points.iter().map(|p| p.start).min().unwrap_or(0);
    let last = chart.points.iter().map(|p| p.start).max().unwrap_or(0);
    let span = (last - first + chart.bucket_seconds).max(1) as f64;
    let x = |start: u64| LEFT + (start - first) as f64 / span * plot_w;
    let bucket_w = chart.bucket_seconds as f64 / span * plot_w;
    let data_max = chart.points.iter().map(|p| p.value).fold(0.0, f64::max);
    let step = tick_step(chart.y_max.unwrap_or(data_max).max(1.0));
    let y_max = chart
        .y_max
        .unwrap_or_else(|| (data_max / step).ceil().max(1.0) * step);
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let y_ticks: Vec<f64> = (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|v| *v <= y_max + step / 1000.0)
        .collect();
    // At most five labels on the x axis, spread over the buckets.
    let starts: Vec<u64> = chart.points.iter().map(|p| p.start).collect();
    let every = starts.len().div_ceil(5).max(1);
    let x_ticks: Vec<u64> = starts.iter().copied().step_by(every).collect();
    let line: Vec<String> = chart
        .points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.start) + bucket_w / 2.0, y(p.value)))
        .collect();
    let title_id = format!("{}-title", chart.id);
    let desc_id = format!("{}-desc", chart.id);
    let axis = if chart.bucket_seconds < 86_400 {
        "hour (UTC)"
    } else {
        "day (UTC)"
    };
    html! {
        svg class="chart" id=(chart.id) viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
            role="img" aria-labelledby=(format!("{title_id} {desc_id}"))
            xmlns="http://www.w3.org/2000/svg" {
            title id=(title_id) { (chart.title) }
            desc id=(desc_id) {
                (chart.points.len()) " buckets by " (axis) "; " (chart.legend) " in " (chart.unit)
                ", from 0 to " (number(y_max)) "."
            }
            // The legend.
            g class="legend" {
                @if chart.style == Style::Bars {
                    rect class="swatch" x=(LEFT) y="8" width="14" height="12" {}
                } @else {
                    line class="swatch" x1=(LEFT) y1="14" x2=(LEFT + 14.0) y2="14" {}
                }
                text x=(LEFT + 20.0) y="19" { (chart.legend) " (" (chart.unit) ")" }
            }
            // Axes, grid and tick labels.
            g class="axis y" {
                @for v in &y_ticks {
                    line class="grid" x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(*v)) y2=(y(*v)) {}
                    text x=(LEFT - 6.0) y=(y(*v) + 4.0) text-anchor="end" { (number(*v)) }
                }
                text class="unit" x="12" y=(TOP + plot_h / 2.0) text-anchor="middle"
                    transform=(format!("rotate(-90 12 {})", TOP + plot_h / 2.0)) { (chart.unit) }
            }
            g class="axis x" {
                line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(TOP + plot_h) y2=(TOP + plot_h) {}
                @for start in &x_ticks {
                    text x=(x(*start) + bucket_w / 2.0) y=(TOP + plot_h + 16.0) text-anchor="middle" {
                        (bucket_label(*start, chart.bucket_seconds))
                    }
                }
                text class="unit" x=(LEFT + plot_w / 2.0) y=(HEIGHT - 6.0) text-anchor="middle" { (axis) }
            }
            // The data: one mark per bucket, each with its numbers on hover.
            g class="data" {
                @if chart.style == Style::Line && chart.points.len() > 1 {
                    polyline class="line" points=(line.join(" ")) {}
                }
                @for p in &chart.points {
                    @if chart.style == Style::Bars {
                        rect class="mark bar" x=(x(p.start) + bucket_w * 0.1) y=(y(p.value))
                            width=(bucket_w * 0.8) height=(TOP + plot_h - y(p.value)) {
                            title { (p.label) }
                        }
                    } @else {
                        circle class="mark point" cx=(x(p.start) + bucket_w / 2.0) cy=(y(p.value)) r="4" {
                            title { (p.label) }
                        }
                    }
                }
            }
        }
    }
}

/// One part of a stacked bar: its name, its count, and the class that colors it.
pub struct Part<'a> {
    pub name: &'a str,
    pub count: u64,
    pub class: &'a str,
}

/// A single bar cut into parts by their share of the total, with a legend of counts: a
/// report's verdicts at a glance.
pub fn stacked_bar(id: &str, title: &str, parts: &[Part]) -> Markup {
    let total: u64 = parts.iter().map(|p| p.count).sum();
    let width = WIDTH - 2.0;
    let mut x = 1.0;
    let mut segments = Vec::new();
    for p in parts {
        let w = if total == 0 {
            0.0
        } else {
            p.count as f64 / total as f64 * width
        };
        segments.push((x, w, p));
        x += w;
    }
    let percent = |count: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * count as f64 / total as f64
        }
    };
    html! {
        svg class="chart summary" id=(id) viewBox=(format!("0 0 {WIDTH} 84"))
            role="img" aria-labelledby=(format!("{id}-title"))
            xmlns="http://www.w3.org/2000/svg" {
            title id=(format!("{id}-title")) {
                (title) ": "
                @for (i, p) in parts.iter().enumerate() {
                    @if i > 0 { ", " }
                    (p.count) " " (p.name)
                }
            }
            @for (x, w, p) in &segments {
                rect class=(format!("segment {}", p.class)) x=(x) y="1" width=(w) height="30" {
                    title { (p.name) ": " (p.count) " of " (total) (format!(" ({:.1}%)", percent(p.count))) }
                }
            }
            rect class="frame" x="1" y="1" width=(width) height="30" {}
            @for (i, p) in parts.iter().enumerate() {
                @let lx = 1.0 + (i % 2) as f64 * width / 2.0;
                @let ly = 50.0 + (i / 2) as f64 * 20.0;
                rect class=(format!("swatch {}", p.class)) x=(lx) y=(ly - 11.0) width="12" height="12" {}
                text x=(lx + 18.0) y=(ly) { (p.name) ": " (p.count) (format!(" ({:.0}%)", percent(p.count))) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(u64, f64)>, style: Style) -> String {
        time_chart(&TimeChart {
            id: "c",
            title: "t",
            legend: "entries",
            unit: "entries",
            bucket_seconds: 3600,
            style,
            y_max: None,
            points: points
                .into_iter()
                .map(|(start, value)| Point {
                    start,
                    value,
                    label: format!("{value}"),
                })
                .collect(),
        })
        .into_string()
    }

    #[test]
    fn one_mark_per_bucket_inside_the_plot() {
        let svg = chart(vec![(0, 3.0), (3600, 10.0), (7200, 0.0)], Style::Bars);
        assert_eq!(svg.matches("class=\"mark bar\"").count(), 3, "{svg}");
        let svg = chart(vec![(0, 3.0), (3600, 10.0), (7200, 0.0)], Style::Line);
        assert_eq!(svg.matches("class=\"mark point\"").count(), 3, "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
        // The tallest bar reaches the top of the axis, which is a round number above it.
        assert!(svg.contains(">10</text>"), "{svg}");
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(1.0), 1.0);
        assert_eq!(tick_step(12_345.0), 5000.0);
    }

    #[test]
    fn text_is_escaped() {
        let svg = time_chart(&TimeChart {
            id: "c",
            title: "<script>",
            legend: "a&b",
            unit: "%",
            bucket_seconds: 86_400,
            style: Style::Line,
            y_max: Some(100.0),
            points: Vec::new(),
        })
        .into_string();
        assert!(
            !svg.contains("<script>") && svg.contains("&lt;script&gt;"),
            "{svg}"
        );
        assert!(svg.contains("a&amp;b"), "{svg}");
    }

    #[test]
    fn a_stacked_bar_splits_by_share() {
        let svg = stacked_bar(
            "s",
            "verdicts",
            &[
                Part {
                    name: "reproduced",
                    count: 3,
                    class: "ok",
                },
                Part {
                    name: "unreproduced",
                    count: 1,
                    class: "bad",
                },
            ],
        )
        .into_string();
        assert!(svg.contains("width=\"313.5\""), "{svg}");
        assert!(svg.contains("unreproduced: 1 (25%)"), "{svg}");
    }
}
