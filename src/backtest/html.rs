//! The HTML report: one self-contained file (inline CSS and SVG, no script, no network) drawn
//! from a [`Report`]: the input, the policies, two plots (trips per hour for each policy; the
//! distribution of time to block) drawn by `plotters`' SVG backend, the totals, the mailboxes one
//! policy blocks and another does not, and a table per tenant.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::report::{Difference, PolicyStats, Report, Section};
use crate::policy::text::iso8601;
use crate::policy::Millis;

/// At most this many tenants get a section (those with the most trips); the JSON has all.
pub const MAX_TENANTS: usize = 200;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `1 h 05 min`, `4 min 10 s`, `12 s`; `10 min`, `1 h`, `7 d` when the smaller unit is 0.
pub fn duration(ms: Millis) -> String {
    let s = ms / 1000;
    let two = |big: i64, u1: &str, small: i64, u2: &str| {
        if small == 0 {
            format!("{big} {u1}")
        } else {
            format!("{big} {u1} {small:02} {u2}")
        }
    };
    match s {
        s if s >= 86_400 => two(s / 86_400, "d", s % 86_400 / 3600, "h"),
        s if s >= 3600 => two(s / 3600, "h", s % 3600 / 60, "min"),
        s if s >= 60 => two(s / 60, "min", s % 60, "s"),
        s => format!("{s} s"),
    }
}

fn opt_duration(ms: Option<Millis>) -> String {
    ms.map_or_else(|| "–".into(), duration)
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let names: Vec<&str> = r.policies.iter().map(|p| p.name.as_str()).collect();
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<title>mailguard backtest</title>\n<style>\n",
        "body{font-family:sans-serif;margin:2em;color:#222;max-width:1000px}",
        "table{border-collapse:collapse;margin:.5em 0 1.5em}",
        "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}",
        "th[scope=row],td.l{text-align:left}caption{text-align:left;font-weight:bold;padding:.3em 0}",
        "figure{margin:1em 0}figcaption{font-size:.9em;color:#444}",
        ".sw{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}",
        "ul.names{columns:3;font-family:monospace;font-size:.9em}",
        "\n</style>\n</head>\n<body>\n<main>\n<h1>mailguard backtest</h1>\n"
    ));
    input(&mut h, r);
    policies(&mut h, r);
    h.push_str("<h2>All tenants</h2>\n");
    stats_table(&mut h, "All tenants", &r.total.policies);
    let _ = writeln!(
        h,
        "<figure id=\"trips-per-hour\">{}<figcaption>Trips per hour (by <code>blocked_at</code>, UTC) for each policy.</figcaption></figure>",
        trips_plot(r, &names)
    );
    let _ = writeln!(
        h,
        "<figure id=\"time-to-block\">{}<figcaption>Time from the first offending message to the block: trips per bucket, for each policy.</figcaption></figure>",
        time_to_block_plot(r, &names)
    );
    differences(&mut h, &r.total);
    tenants(&mut h, r);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn input(h: &mut String, r: &Report) {
    let i = &r.input;
    let t = |x: Option<Millis>| x.map_or_else(|| "–".into(), iso8601);
    let _ = writeln!(
        h,
        "<table><caption>Input</caption>\n<tr><th scope=\"row\">Source</th><td class=\"l\">{}</td></tr>\n\
         <tr><th scope=\"row\">Range</th><td class=\"l\">{} to {}</td></tr>\n\
         <tr><th scope=\"row\">Verdicts sent</th><td class=\"l\">{} to {}</td></tr>\n\
         <tr><th scope=\"row\">Verdicts</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Offending (SPAM, VIRUS)</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Rejected records</th><td>{}</td></tr>\n\
         <tr><th scope=\"row\">Most mailboxes held at once</th><td>{}</td></tr>\n</table>",
        escape(&i.source),
        t(i.from),
        t(i.to),
        t(i.first_sent_at),
        t(i.last_sent_at),
        i.verdicts,
        i.offending,
        i.rejected,
        i.peak_active_mailboxes
    );
    if !i.rejected_examples.is_empty() {
        h.push_str("<p>First rejected records:</p>\n<ul>\n");
        for e in &i.rejected_examples {
            let _ = writeln!(h, "<li>{}</li>", escape(e));
        }
        h.push_str("</ul>\n");
    }
}

fn policies(h: &mut String, r: &Report) {
    h.push_str("<table><caption>Policies</caption>\n<tr><th scope=\"col\">Policy</th><th scope=\"col\">Threshold</th><th scope=\"col\">Window</th><th scope=\"col\">Lateness</th><th scope=\"col\">First block</th><th scope=\"col\">Permanent at strike</th><th scope=\"col\">Strike decay</th><th scope=\"col\">Tenant overrides</th></tr>\n");
    for (i, p) in r.policies.iter().enumerate() {
        let q = &p.policy;
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\"><span class=\"sw\" style=\"background:{}\"></span>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            css(colour(i)),
            escape(&p.name),
            q.threshold,
            duration(q.window_ms),
            duration(q.allowed_lateness_ms),
            duration(q.base_block_ms),
            q.permanent_strike,
            opt_duration(q.strike_decay_ms),
            escape(&overrides_text(p)),
        );
    }
    h.push_str("</table>\n");
}

fn overrides_text(p: &super::report::PolicyDesc) -> String {
    if p.tenants.is_empty() {
        return "none".into();
    }
    p.tenants
        .iter()
        .map(|(t, o)| {
            let mut parts = Vec::new();
            if let Some(x) = o.threshold {
                parts.push(format!("threshold {x}"));
            }
            if let Some(x) = o.window_ms {
                parts.push(format!("window {}", duration(x)));
            }
            if let Some(x) = o.base_block_ms {
                parts.push(format!("first block {}", duration(x)));
            }
            if let Some(x) = o.permanent_strike {
                parts.push(format!("permanent at {x}"));
            }
            format!("{t}: {}", parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn css(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn stats_table(h: &mut String, caption: &str, stats: &[PolicyStats]) {
    let _ = writeln!(
        h,
        "<table><caption>{}</caption>\n<tr><th scope=\"col\">Policy</th><th scope=\"col\">Mailboxes blocked</th><th scope=\"col\">Trips</th><th scope=\"col\">By strike</th><th scope=\"col\">Permanent blocks</th><th scope=\"col\">Time to block: median</th><th scope=\"col\">90th percentile</th><th scope=\"col\">longest</th></tr>",
        escape(caption)
    );
    for s in stats {
        let strikes = s
            .strikes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let d = &s.time_to_block_ms;
        let _ = writeln!(
            h,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.name),
            s.blocked_mailboxes,
            s.trips,
            if strikes.is_empty() { "–".into() } else { strikes },
            s.permanent_blocks,
            opt_duration(d.p50),
            opt_duration(d.p90),
            opt_duration(d.max),
        );
    }
    h.push_str("</table>\n");
}

fn differences(h: &mut String, s: &Section) {
    for d in &s.differences {
        difference(h, d);
    }
}

fn difference(h: &mut String, d: &Difference) {
    let _ = writeln!(
        h,
        "<h3>Blocked by {} and not by {}: {}</h3>",
        escape(&d.blocked_by),
        escape(&d.not_by),
        d.count
    );
    if d.mailboxes.is_empty() {
        return;
    }
    h.push_str("<ul class=\"names\">\n");
    for m in &d.mailboxes {
        let _ = writeln!(h, "<li>{}</li>", escape(m));
    }
    h.push_str("</ul>\n");
    if d.more > 0 {
        let _ = writeln!(
            h,
            "<p>… and {} more (all are in the JSON report).</p>",
            d.more
        );
    }
}

fn tenants(h: &mut String, r: &Report) {
    let mut order: Vec<(&String, &Section)> = r.tenants.iter().collect();
    let trips = |s: &Section| s.policies.iter().map(|p| p.trips).sum::<u64>();
    order.sort_by(|a, b| trips(b.1).cmp(&trips(a.1)).then(a.0.cmp(b.0)));
    let _ = writeln!(h, "<h2>By tenant ({})</h2>", order.len());
    for (t, s) in order.iter().take(MAX_TENANTS) {
        let _ = writeln!(h, "<section><h3>Tenant {}</h3>", escape(t));
        stats_table(h, "By policy", &s.policies);
        for d in s.differences.iter().filter(|d| d.count > 0) {
            let names = d
                .mailboxes
                .iter()
                .map(|m| escape(m))
                .collect::<Vec<_>>()
                .join(", ");
            let more = if d.more > 0 {
                format!(" and {} more", d.more)
            } else {
                String::new()
            };
            let _ = writeln!(
                h,
                "<p>Blocked by {} and not by {} ({}): {names}{more}</p>",
                escape(&d.blocked_by),
                escape(&d.not_by),
                d.count
            );
        }
        h.push_str("</section>\n");
    }
    if order.len() > MAX_TENANTS {
        let _ = writeln!(
            h,
            "<p>{} more tenants with fewer trips are in the JSON report.</p>",
            order.len() - MAX_TENANTS
        );
    }
}

const SIZE: (u32, u32) = (960, 380);

/// An SVG drawing, or the reason it failed as text (never a broken page).
fn svg(
    label: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        // The accessible name of the drawing.
        Ok(()) => out.replacen(
            "<svg ",
            &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(label)),
            1,
        ),
        Err(e) => format!("<p>The plot could not be drawn: {}</p>", escape(&e)),
    }
}

/// The legend of a plot: each policy's name by its colour, upper right.
fn legend<'a, 'b: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

fn hour_label(ms: Millis) -> String {
    let s = iso8601(ms);
    // `2026-12-01T10:00:00.000Z` → `12-01 10:00`.
    format!("{} {}", &s[5..10], &s[11..16])
}

fn trips_plot(r: &Report, names: &[&str]) -> String {
    let rows = &r.trips_per_hour;
    if rows.is_empty() {
        return "<p>No policy tripped.</p>".into();
    }
    let x0 = rows[0].hour;
    let x1 = rows[rows.len() - 1].hour + super::run::HOUR_MS;
    let ymax = rows
        .iter()
        .flat_map(|row| row.trips.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    svg("Trips per hour for each policy", |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption("Trips per hour", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0u64..ymax + ymax / 10 + 1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .x_desc("hour (UTC)")
            .y_desc("trips")
            .x_labels(8)
            .x_label_formatter(&|x| hour_label(*x))
            .draw()
            .map_err(e)?;
        for (i, name) in names.iter().enumerate() {
            let c = colour(i);
            let points = rows.iter().map(|row| (row.hour, row.trips[i]));
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(e)?
                .label(name.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        legend(&mut chart)
    })
}

fn bucket_label(up_to: Option<Millis>, prev: Option<Millis>) -> String {
    match (up_to, prev) {
        (Some(u), _) => format!("≤ {}", duration(u)),
        (None, Some(p)) => format!("> {}", duration(p)),
        (None, None) => "all".into(),
    }
}

fn time_to_block_plot(r: &Report, names: &[&str]) -> String {
    let buckets = &r.time_to_block_histogram;
    let n = names.len().max(1);
    let ymax = buckets
        .iter()
        .flat_map(|b| b.counts.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let labels: Vec<String> = buckets
        .iter()
        .enumerate()
        .map(|(k, b)| {
            bucket_label(
                b.up_to_ms,
                k.checked_sub(1).and_then(|j| buckets[j].up_to_ms),
            )
        })
        .collect();
    let k = buckets.len() as f64;
    svg(
        "Distribution of the time to block for each policy",
        |root| {
            let e = |e: DrawingAreaErrorKind<_>| e.to_string();
            let mut chart = ChartBuilder::on(root)
                .caption(
                    "Time from first offending message to block",
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(48)
                .y_label_area_size(56)
                .build_cartesian_2d(-0.5f64..k - 0.5, 0u64..ymax + ymax / 10 + 1)
                .map_err(e)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("time to block")
                .y_desc("trips")
                .x_labels(buckets.len())
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        labels.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(e)?;
            let w = 0.8 / n as f64;
            for (i, name) in names.iter().enumerate() {
                let c = colour(i);
                let bars = buckets.iter().enumerate().map(move |(b, bucket)| {
                    let left = b as f64 - 0.4 + i as f64 * w;
                    Rectangle::new([(left, 0), (left + w, bucket.counts[i])], c.filled())
                });
                chart
                    .draw_series(bars)
                    .map_err(e)?
                    .label(name.to_string())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
                    });
            }
            legend(&mut chart)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::report::InputSummary;
    use crate::backtest::run::{Backtest, PolicySet};
    use crate::codec::VerdictRef;
    use crate::policy::{Policy, VerdictKind};

    #[test]
    fn the_page_has_both_plots_with_axis_labels_and_escapes_names() {
        let sets = ["live", "<strict>"]
            .iter()
            .zip([5, 3])
            .map(|(name, threshold)| PolicySet {
                name: name.to_string(),
                policy: Policy {
                    threshold,
                    ..Policy::default()
                },
                tenants: Default::default(),
            })
            .collect();
        let mut b = Backtest::new(sets);
        let t0 = 1_700_000_000_000;
        for i in 0..40i64 {
            let id = format!("m{i}");
            let mailbox = format!("u{}@x.com", i % 4);
            let v = VerdictRef {
                message_id: &id,
                tenant_id: "t&1",
                mailbox: &mailbox,
                sent_at: t0 + i * 60_000,
                verdict: VerdictKind::Spam,
            };
            b.verdict(&v, v.sent_at);
        }
        let page = render(&Report::of(&b, InputSummary::default()));
        assert_eq!(page.matches("<svg role=\"img\"").count(), 2, "{page}");
        for text in [
            "trips",
            "hour (UTC)",
            "time to block",
            "Tenant t&amp;1",
            "&lt;strict&gt;",
        ] {
            assert!(page.contains(text), "{text} missing");
        }
        assert!(!page.contains("<script"), "no script");
        assert!(!page.contains("could not be drawn"), "{page}");
    }

    #[test]
    fn a_backtest_without_trips_says_so() {
        let sets = vec![PolicySet {
            name: "live".into(),
            policy: Policy::default(),
            tenants: Default::default(),
        }];
        let page = render(&Report::of(&Backtest::new(sets), InputSummary::default()));
        assert!(page.contains("No policy tripped."), "{page}");
        assert!(!page.contains("could not be drawn"), "{page}");
        assert!(page.contains("By tenant (0)"));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(12_000), "12 s");
        assert_eq!(duration(250_000), "4 min 10 s");
        assert_eq!(duration(3_900_000), "1 h 05 min");
        assert_eq!(duration(90_000_000), "1 d 01 h");
        assert_eq!(duration(600_000), "10 min");
        assert_eq!(duration(604_800_000), "7 d");
    }
}
