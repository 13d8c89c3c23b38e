//! Charts of the dashboard, drawn as SVG on the server (no script, no
//! CDN: the county network may have none).
//!
//! No maintained crate fits (inline, CSP-safe, CJK labels, no CSS), so the SVG is written by hand as strings.
//!
//! Every function here is pure: it returns one complete inline `<svg>`
//! element that scales with its container (`viewBox` + `width="100%"`),
//! carries `role="img"`, an `aria-label` and a `<title>`, and uses only SVG
//! presentation attributes (no `style=`, no `<script>`, no external fonts),
//! so it survives a strict Content-Security-Policy and prints as is.
//! Everything that comes from data is XML-escaped; coordinates are rounded to
//! one decimal so the same input always gives byte-identical output.
//! Text shown to users is Chinese.

use std::fmt::Write as _;

use chrono::{Datelike, Days, NaiveDate};
use unicode_width::UnicodeWidthStr;

/// Registration progress of a campaign, input of [`progress_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Units on the roster (the chart's top line).
    pub total: usize,
    /// For each day (campaign time zone) with at least one unit registered that day: the date and how many units reached `registered` that day, ascending.
    pub per_day: Vec<(chrono::NaiveDate, usize)>,
    /// First day shown (the campaign's start or the first arrival, whichever is earlier); None: the first day of per_day or today.
    pub start: Option<chrono::NaiveDate>,
    pub deadline: Option<chrono::NaiveDate>,
    pub today: chrono::NaiveDate,
}

/// Units of one category by state, input of [`category_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryCount {
    pub category: String,
    pub registered: usize,
    pub needs_review: usize,
    pub missing: usize,
}

// Generic families only: nothing is downloaded.
const FONT: &str = "'Microsoft YaHei', 'PingFang SC', 'Noto Sans CJK SC', 'SimHei', sans-serif";
const C_REGISTERED: &str = "#2e7d32";
const C_REVIEW: &str = "#f9a825";
const C_MISSING: &str = "#c62828";
/// Darker amber for text written in the review colour on white.
const C_REVIEW_TEXT: &str = "#8a6100";
const C_GRID: &str = "#ddd";
const C_AXIS: &str = "#999";
const C_TEXT: &str = "#333";
const C_MUTED: &str = "#666";
const C_AREA: &str = "#e8f5e9";
const C_DAY_BAR: &str = "#81c784";
const C_TODAY: &str = "#1565c0";
/// Hatching keeps "missing" apart from "registered" when printed in
/// greyscale (#2e7d32 and #c62828 have almost the same luminance).
const MISSING_PATTERN_ID: &str = "xxdc-chart-missing-hatch";
const MISSING_FILL: &str = "url(#xxdc-chart-missing-hatch)";

/// Common width of both charts in viewBox units (about the content width of
/// a 1366 px screen; scales down for print).
const WIDTH: f64 = 960.0;

// ---------------------------------------------------------------------------
// Progress chart

/// Cumulative registered units over time as a step area, with per-day bars,
/// the roster total, the deadline and today.
pub fn progress_chart(p: &Progress) -> String {
    const H: f64 = 400.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = WIDTH - 24.0;
    const TOP: f64 = 86.0;
    const BOTTOM: f64 = H - 40.0;

    let days = normalise_days(&p.per_day);
    let first = days.first().map(|&(d, _)| d);
    let last = days.last().map(|&(d, _)| d);
    let start = p.start.or(first).unwrap_or(p.today);
    // The domain covers every date that has to be drawn, so a deadline before
    // the start or a `today` outside the campaign still lands on the chart.
    let candidates = [Some(start), first, last, p.deadline, Some(p.today)];
    let lo = candidates
        .iter()
        .flatten()
        .min()
        .copied()
        .unwrap_or(p.today);
    let hi = candidates
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(p.today);
    let index = |d: NaiveDate| d.signed_duration_since(lo).num_days().max(0) as f64;
    let span = index(hi) + 1.0;
    let with_year = lo.year() != hi.year();

    let mut cumulative = Vec::with_capacity(days.len());
    let mut sum = 0usize;
    for &(d, count) in &days {
        sum = sum.saturating_add(count);
        cumulative.push((d, count, sum));
    }
    let registered = sum;
    let y_max = p.total.max(registered).max(1);

    let plot_w = RIGHT - LEFT;
    let plot_h = BOTTOM - TOP;
    let day_w = plot_w / span;
    let x_left = |i: f64| LEFT + i * day_w;
    let x_mid = |i: f64| LEFT + (i + 0.5) * day_w;
    let y = |v: usize| BOTTOM - v as f64 / y_max as f64 * plot_h;

    let deadline_text = p
        .deadline
        .map(|d| format!("截止 {}", day_label(d, with_year)));
    let mut summary = format!(
        "登记进度：应报 {} 个单位，已登记 {} 个单位",
        p.total, registered
    );
    if let Some(t) = &deadline_text {
        summary.push('，');
        summary.push_str(t);
    }
    let mut svg = Svg::new(WIDTH, H, &summary);

    // Header: title, figures, legend.
    svg.text(16.0, 26.0, Font::TITLE, "登记进度（累计已登记单位）");
    let figures = if p.total > 0 {
        let percent = (registered as f64 / p.total as f64 * 100.0).round();
        format!("已登记 {registered} / {} 个单位（{percent}%）", p.total)
    } else {
        format!("名单中暂无单位，已登记 {registered} 个")
    };
    svg.text(
        WIDTH - 16.0,
        26.0,
        Font::new(14.0, Anchor::End, C_TEXT),
        &figures,
    );
    let mut lx = 16.0;
    svg.rect(lx, 41.0, 14.0, 10.0, C_AREA, None);
    svg.line(
        (lx, 41.0),
        (lx + 14.0, 41.0),
        Stroke::solid(C_REGISTERED, 2.0),
    );
    lx += 20.0;
    svg.text(lx, 50.0, Font::LEGEND, "累计已登记");
    lx += text_width("累计已登记", 12.0) + 18.0;
    svg.rect(lx + 3.0, 41.0, 8.0, 10.0, C_DAY_BAR, None);
    lx += 20.0;
    svg.text(lx, 50.0, Font::LEGEND, "当日新登记");

    // Horizontal gridlines and y labels.
    let step = nice_step(y_max, 5);
    let min_gap = 14.0;
    let mut labelled = Vec::new();
    for v in (0..=y_max).step_by(step) {
        let yy = y(v);
        if v != y_max && v != 0 && (yy - y(y_max)).abs() < min_gap {
            continue; // too close to the top line
        }
        if v != 0 {
            svg.line((LEFT, yy), (RIGHT, yy), Stroke::solid(C_GRID, 1.0));
        }
        svg.text(
            LEFT - 8.0,
            yy + 4.0,
            Font::new(12.0, Anchor::End, C_MUTED),
            &v.to_string(),
        );
        labelled.push(yy);
    }
    if labelled.iter().all(|&yy| (yy - y(y_max)).abs() >= min_gap) {
        svg.text(
            LEFT - 8.0,
            y(y_max) + 4.0,
            Font::new(12.0, Anchor::End, C_MUTED),
            &y_max.to_string(),
        );
    }

    // Cumulative step area and line, up to today (or the last arrival).
    let end = index(p.today).max(last.map_or(0.0, index));
    let mut line = format!("M{} {}", n(x_left(0.0)), n(y(0)));
    for &(d, _, cum) in &cumulative {
        let _ = write!(line, " H{} V{}", n(x_left(index(d))), n(y(cum)));
    }
    let _ = write!(line, " H{}", n(x_left(end + 1.0)));
    if !cumulative.is_empty() {
        let area = format!("{line} V{} H{} Z", n(y(0)), n(x_left(0.0)));
        let _ = write!(
            svg.out,
            r#"<path d="{area}" fill="{C_AREA}" stroke="none"/>"#
        );
    }

    // Per-day bars (same unit scale as the cumulative line).
    let bar_w = (day_w * 0.6).clamp(1.0, 28.0);
    for &(d, count, cum) in &cumulative {
        let cx = x_mid(index(d));
        let top = y(count);
        let title = format!("{}：当日新登记 {count} 个单位", day_label(d, with_year));
        svg.rect(
            cx - bar_w / 2.0,
            top,
            bar_w,
            BOTTOM - top,
            C_DAY_BAR,
            Some(&title),
        );
        if day_w >= 18.0 {
            // Above the bar, unless the cumulative dot sits there: then inside
            // a tall enough bar, else only in the tooltip.
            let above = top - 3.0;
            let font = Font::new(10.0, Anchor::Middle, C_MUTED);
            if (above - 4.0 - y(cum)).abs() >= 9.0 {
                svg.text(cx, above, font, &count.to_string());
            } else if BOTTOM - top >= 18.0 {
                svg.text(
                    cx,
                    top + 14.0,
                    Font {
                        fill: C_TEXT,
                        ..font
                    },
                    &count.to_string(),
                );
            }
        }
    }
    let _ = write!(
        svg.out,
        r#"<path d="{line}" fill="none" stroke="{C_REGISTERED}" stroke-width="2" stroke-linejoin="round"/>"#
    );

    // Roster total.
    let y_total = y(p.total);
    svg.line(
        (LEFT, y_total),
        (RIGHT, y_total),
        Stroke::dashed(C_MUTED, 1.2, "5 4"),
    );
    let total_label = format!("应报 {} 个单位", p.total);
    let total_label_y = if p.total == 0 {
        y_total - 6.0
    } else {
        y_total + 15.0
    };
    svg.text(
        LEFT + 6.0,
        total_label_y,
        Font::new(12.0, Anchor::Start, C_TEXT),
        &total_label,
    );

    // X axis and thinned date labels.
    svg.line((LEFT, BOTTOM), (RIGHT, BOTTOM), Stroke::solid(C_AXIS, 1.0));
    let label_w = text_width(
        if with_year {
            "2000年12月31日"
        } else {
            "12月31日"
        },
        12.0,
    );
    let max_labels = (plot_w / (label_w + 16.0)).floor().max(1.0);
    let every = day_step((span / max_labels).ceil() as u64);
    let mut previous_year = None;
    let mut i = 0u64;
    while (i as f64) < span {
        let Some(d) = lo.checked_add_days(Days::new(i)) else {
            break;
        };
        let x = x_mid(i as f64);
        let text = day_label(d, with_year && previous_year != Some(d.year()));
        previous_year = Some(d.year());
        svg.line((x, BOTTOM), (x, BOTTOM + 4.0), Stroke::solid(C_AXIS, 1.0));
        let tx = clamp_center(x, text_width(&text, 12.0), 4.0, WIDTH - 4.0);
        svg.text(
            tx,
            BOTTOM + 18.0,
            Font::new(12.0, Anchor::Middle, C_MUTED),
            &text,
        );
        i = i.saturating_add(every);
    }

    // Deadline and today markers; labels above the plot, staggered if close.
    let mut deadline_x = None;
    if let (Some(d), Some(text)) = (p.deadline, &deadline_text) {
        let x = x_mid(index(d));
        svg.line(
            (x, TOP - 4.0),
            (x, BOTTOM),
            Stroke::dashed(C_MISSING, 1.5, "6 4"),
        );
        let tw = text_width(text, 12.0);
        let tx = clamp_center(x, tw, 4.0, WIDTH - 4.0);
        svg.text(
            tx,
            TOP - 8.0,
            Font::new(12.0, Anchor::Middle, C_MISSING).bold(),
            text,
        );
        deadline_x = Some((tx, tw));
    }
    let x_today = x_mid(index(p.today));
    svg.line(
        (x_today, TOP - 4.0),
        (x_today, BOTTOM),
        Stroke::dashed(C_TODAY, 1.5, "2 3"),
    );
    let today_w = text_width("今天", 12.0);
    let today_tx = clamp_center(x_today, today_w, 4.0, WIDTH - 4.0);
    let crowded =
        deadline_x.is_some_and(|(dx, dw)| (dx - today_tx).abs() < (dw + today_w) / 2.0 + 8.0);
    let today_y = if crowded { TOP - 22.0 } else { TOP - 8.0 };
    svg.text(
        today_tx,
        today_y,
        Font::new(12.0, Anchor::Middle, C_TODAY).bold(),
        "今天",
    );

    // Dots on the cumulative line, last so their tooltips win.
    let radius = (day_w * 0.4).clamp(1.5, 3.5);
    for &(d, _, cum) in &cumulative {
        let title = format!("{}：累计 {cum} 个单位", day_label(d, with_year));
        let _ = write!(
            svg.out,
            r##"<circle cx="{}" cy="{}" r="{}" fill="{C_REGISTERED}" stroke="#fff" stroke-width="1"><title>{}</title></circle>"##,
            n(x_mid(index(d))),
            n(y(cum)),
            n(radius),
            escape(&title)
        );
    }

    if cumulative.is_empty() {
        let font = Font::new(16.0, Anchor::Middle, C_MUTED);
        svg.text(
            (LEFT + RIGHT) / 2.0,
            (TOP + BOTTOM) / 2.0,
            font,
            "尚无单位登记",
        );
    }
    svg.finish()
}

/// Sorted by date, same dates merged, days without registrations dropped.
fn normalise_days(per_day: &[(NaiveDate, usize)]) -> Vec<(NaiveDate, usize)> {
    let mut sorted = per_day.to_vec();
    sorted.sort_by_key(|&(d, _)| d);
    let mut days: Vec<(NaiveDate, usize)> = Vec::with_capacity(sorted.len());
    for (d, count) in sorted {
        if count == 0 {
            continue;
        }
        match days.last_mut() {
            Some((last, sum)) if *last == d => *sum = sum.saturating_add(count),
            _ => days.push((d, count)),
        }
    }
    days
}

/// `5月17日`, or `2025年1月3日` when the year has to be told.
fn day_label(d: NaiveDate, with_year: bool) -> String {
    if with_year {
        format!("{}年{}月{}日", d.year(), d.month(), d.day())
    } else {
        format!("{}月{}日", d.month(), d.day())
    }
}

/// A gridline step of 1, 2 or 5 times a power of ten giving at most about
/// `target` intervals up to `max`.
fn nice_step(max: usize, target: usize) -> usize {
    let raw = (max as f64 / target.max(1) as f64).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = match raw / magnitude {
        r if r <= 1.0 => 1.0,
        r if r <= 2.0 => 2.0,
        r if r <= 5.0 => 5.0,
        _ => 10.0,
    };
    ((m * magnitude) as usize).max(1)
}

/// Label every `n`-th day, `n` rounded up to a calendar-friendly value.
fn day_step(min: u64) -> u64 {
    const STEPS: [u64; 16] = [1, 2, 3, 4, 5, 7, 10, 14, 21, 28, 30, 60, 90, 120, 180, 365];
    STEPS
        .iter()
        .copied()
        .find(|&s| s >= min)
        .unwrap_or_else(|| min.div_ceil(365).saturating_mul(365))
}

// ---------------------------------------------------------------------------
// Category chart

/// One horizontal stacked bar per category (registered / needs review /
/// missing), all normalised to the largest category total.
pub fn category_chart(rows: &[CategoryCount]) -> String {
    const TITLE: &str = "各类单位报送情况";
    if rows.is_empty() {
        let mut svg = Svg::new(WIDTH, 90.0, "各类单位报送情况：暂无单位");
        svg.text(16.0, 26.0, Font::TITLE, TITLE);
        svg.text(
            WIDTH / 2.0,
            64.0,
            Font::new(16.0, Anchor::Middle, C_MUTED),
            "暂无单位",
        );
        return svg.finish();
    }

    const NAME_SIZE: f64 = 13.0;
    const MAX_NAME_W: f64 = 220.0;
    const TOP: f64 = 74.0;
    const ROW_H: f64 = 30.0;
    const BAR_H: f64 = 18.0;
    const MARGIN: f64 = 16.0;

    let names: Vec<String> = rows
        .iter()
        .map(|r| truncate(&r.category, MAX_NAME_W, NAME_SIZE))
        .collect();
    let name_w = names
        .iter()
        .map(|s| text_width(s, NAME_SIZE))
        .fold(0.0, f64::max)
        .clamp(48.0, MAX_NAME_W);
    let bar_x = MARGIN + name_w + 10.0;
    let max_total = rows.iter().map(row_total).max().unwrap_or(0);

    let layouts = fit_rows(rows, bar_x, WIDTH - MARGIN, max_total);

    let (mut reg, mut review, mut missing) = (0usize, 0usize, 0usize);
    for r in rows {
        reg = reg.saturating_add(r.registered);
        review = review.saturating_add(r.needs_review);
        missing = missing.saturating_add(r.missing);
    }
    let all = reg.saturating_add(review).saturating_add(missing);
    let summary = format!(
        "{TITLE}：{} 类，共 {all} 个单位，已登记 {reg} 个，待人工处理 {review} 个，未报送 {missing} 个",
        rows.len()
    );
    let height = TOP + rows.len() as f64 * ROW_H + 12.0;
    let mut svg = Svg::new(WIDTH, height, &summary);
    let _ = write!(
        svg.out,
        r##"<defs><pattern id="{MISSING_PATTERN_ID}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="{C_MISSING}"/><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="1.6" stroke-opacity="0.45"/></pattern></defs>"##
    );
    svg.text(MARGIN, 26.0, Font::TITLE, TITLE);

    // Legend.
    let mut lx = MARGIN;
    for kind in Kind::ALL {
        svg.rect(lx, 40.0, 12.0, 12.0, kind.fill(), None);
        svg.text(lx + 17.0, 50.5, Font::LEGEND, kind.label());
        lx += 17.0 + text_width(kind.label(), 12.0) + 20.0;
    }

    svg.line(
        (bar_x, TOP - 4.0),
        (bar_x, height - 8.0),
        Stroke::solid(C_AXIS, 1.0),
    );
    for (i, ((row, name), layout)) in rows.iter().zip(&names).zip(&layouts).enumerate() {
        let top = TOP + i as f64 * ROW_H + (ROW_H - BAR_H) / 2.0;
        let mid = top + BAR_H / 2.0;
        let title = format!(
            "{}：共 {} 个单位，已登记 {} 个，待人工处理 {} 个，未报送 {} 个",
            row.category,
            row_total(row),
            row.registered,
            row.needs_review,
            row.missing
        );
        let _ = write!(svg.out, "<g><title>{}</title>", escape(&title));
        svg.text(
            bar_x - 10.0,
            mid + 4.5,
            Font::new(NAME_SIZE, Anchor::End, C_TEXT),
            name,
        );
        if layout.segments.is_empty() {
            svg.text(
                bar_x + 6.0,
                mid + 4.0,
                Font::new(12.0, Anchor::Start, C_MUTED),
                "（无单位）",
            );
        }
        for seg in &layout.segments {
            let title = format!("{}：{} {} 个", row.category, seg.kind.label(), seg.count);
            svg.rect(
                seg.x0,
                top,
                seg.x1 - seg.x0,
                BAR_H,
                seg.kind.fill(),
                Some(&title),
            );
            if seg.inside {
                let font = Font::new(12.0, Anchor::Middle, seg.kind.ink()).bold();
                svg.text(
                    (seg.x0 + seg.x1) / 2.0,
                    mid + 4.0,
                    font,
                    &seg.count.to_string(),
                );
            }
        }
        for (x, kind, text) in &layout.outside {
            svg.text(
                *x,
                mid + 4.0,
                Font::new(12.0, Anchor::Start, kind.text_colour()).bold(),
                text,
            );
        }
        svg.out.push_str("</g>");
    }
    svg.finish()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Registered,
    Review,
    Missing,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Registered, Kind::Review, Kind::Missing];

    fn label(self) -> &'static str {
        match self {
            Kind::Registered => "已登记",
            Kind::Review => "待人工处理",
            Kind::Missing => "未报送",
        }
    }

    fn fill(self) -> &'static str {
        match self {
            Kind::Registered => C_REGISTERED,
            Kind::Review => C_REVIEW,
            Kind::Missing => MISSING_FILL,
        }
    }

    /// Text on the segment.
    fn ink(self) -> &'static str {
        match self {
            Kind::Review => C_TEXT,
            Kind::Registered | Kind::Missing => "#fff",
        }
    }

    /// Text in the segment's colour on white.
    fn text_colour(self) -> &'static str {
        match self {
            Kind::Registered => C_REGISTERED,
            Kind::Review => C_REVIEW_TEXT,
            Kind::Missing => C_MISSING,
        }
    }

    fn count(self, row: &CategoryCount) -> usize {
        match self {
            Kind::Registered => row.registered,
            Kind::Review => row.needs_review,
            Kind::Missing => row.missing,
        }
    }
}

#[derive(Debug)]
struct Segment {
    kind: Kind,
    count: usize,
    x0: f64,
    x1: f64,
    inside: bool,
}

#[derive(Debug)]
struct RowLayout {
    segments: Vec<Segment>,
    /// Numbers too wide for their segment: x, kind, text.
    outside: Vec<(f64, Kind, String)>,
    /// Right end of everything drawn in the row.
    end: f64,
}

/// Lays the rows out with the widest bar area (ending before `right`) such
/// that the numbers written after the bars, when they don't fit inside their
/// segment, stay within the picture too.
fn fit_rows(rows: &[CategoryCount], bar_x: f64, right: f64, max_total: usize) -> Vec<RowLayout> {
    let min_w = ((right - bar_x) * 0.3).max(60.0);
    let mut bar_w = right - bar_x - 40.0;
    let mut layouts = layout_rows(rows, bar_x, bar_w, max_total);
    // Shrinking can push more numbers out of their segments: a few rounds.
    for _ in 0..8 {
        let end = layouts.iter().map(|l| l.end).fold(0.0, f64::max);
        if end <= right || bar_w <= min_w {
            break;
        }
        bar_w = (bar_w - (end - right)).max(min_w);
        layouts = layout_rows(rows, bar_x, bar_w, max_total);
    }
    layouts
}

fn row_total(row: &CategoryCount) -> usize {
    row.registered
        .saturating_add(row.needs_review)
        .saturating_add(row.missing)
}

fn layout_rows(rows: &[CategoryCount], bar_x: f64, bar_w: f64, max_total: usize) -> Vec<RowLayout> {
    let scale = if max_total == 0 {
        0.0
    } else {
        bar_w / max_total as f64
    };
    rows.iter()
        .map(|row| {
            let mut segments = Vec::new();
            let mut outside = Vec::new();
            let mut acc = 0usize;
            for kind in Kind::ALL {
                let count = kind.count(row);
                if count == 0 {
                    continue;
                }
                // Both edges rounded the same way: adjacent segments touch.
                let x0 = round1(bar_x + acc as f64 * scale);
                acc = acc.saturating_add(count);
                let x1 = round1(bar_x + acc as f64 * scale);
                let inside = x1 - x0 >= text_width(&count.to_string(), 12.0) + 8.0;
                segments.push(Segment {
                    kind,
                    count,
                    x0,
                    x1,
                    inside,
                });
            }
            let mut end = segments.last().map_or(bar_x, |s| s.x1);
            let mut x = end + 6.0;
            for seg in segments.iter().filter(|s| !s.inside) {
                let text = format!("{} {}", seg.kind.label(), seg.count);
                let w = text_width(&text, 12.0);
                outside.push((x, seg.kind, text));
                end = x + w;
                x = end + 10.0;
            }
            RowLayout {
                segments,
                outside,
                end,
            }
        })
        .collect()
}

/// Cut `s` to at most `max_w` wide, ending with `…` when cut.
fn truncate(s: &str, max_w: f64, size: f64) -> String {
    if text_width(s, size) <= max_w {
        return s.to_string();
    }
    let budget = max_w - text_width("…", size);
    let mut out = String::new();
    for c in s.chars() {
        out.push(c);
        if text_width(&out, size) > budget {
            out.pop();
            break;
        }
    }
    out.push('…');
    out
}

// ---------------------------------------------------------------------------
// SVG writing helpers

/// XML-escapes `s` for text and attribute values; characters not allowed in
/// XML 1.0 (most control characters) are dropped, tabs and line breaks become
/// spaces.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(' '),
            '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => out.push(c),
            _ => {}
        }
    }
    out
}

/// Rounds to one decimal.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A coordinate rounded to one decimal, without a trailing `.0` and never
/// `-0`.
fn n(x: f64) -> String {
    if !x.is_finite() {
        return "0".to_string();
    }
    let tenths = (x * 10.0).round() as i64;
    let sign = if tenths < 0 { "-" } else { "" };
    let t = tenths.unsigned_abs();
    if t.is_multiple_of(10) {
        format!("{sign}{}", t / 10)
    } else {
        format!("{sign}{}.{}", t / 10, t % 10)
    }
}

/// Rough rendered width: CJK glyphs about one em, Latin digits about half.
fn text_width(s: &str, size: f64) -> f64 {
    UnicodeWidthStr::width(s) as f64 * size * 0.55
}

/// Centre for a text `width` wide near `x`, kept within `lo..hi`.
fn clamp_center(x: f64, width: f64, lo: f64, hi: f64) -> f64 {
    let half = width / 2.0;
    if hi - lo <= width {
        (lo + hi) / 2.0
    } else {
        x.clamp(lo + half, hi - half)
    }
}

#[derive(Debug, Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Font {
    size: f64,
    anchor: Anchor,
    fill: &'static str,
    bold: bool,
}

impl Font {
    const TITLE: Font = Font {
        size: 18.0,
        anchor: Anchor::Start,
        fill: C_TEXT,
        bold: true,
    };
    const LEGEND: Font = Font {
        size: 12.0,
        anchor: Anchor::Start,
        fill: C_TEXT,
        bold: false,
    };

    fn new(size: f64, anchor: Anchor, fill: &'static str) -> Self {
        Font {
            size,
            anchor,
            fill,
            bold: false,
        }
    }

    fn bold(self) -> Self {
        Font { bold: true, ..self }
    }
}

#[derive(Debug, Clone, Copy)]
struct Stroke {
    colour: &'static str,
    width: f64,
    dash: Option<&'static str>,
}

impl Stroke {
    fn solid(colour: &'static str, width: f64) -> Self {
        Stroke {
            colour,
            width,
            dash: None,
        }
    }

    fn dashed(colour: &'static str, width: f64, dash: &'static str) -> Self {
        Stroke {
            colour,
            width,
            dash: Some(dash),
        }
    }
}

/// An `<svg>` element being written; every method escapes what it is given.
#[derive(Debug)]
struct Svg {
    out: String,
}

impl Svg {
    fn new(width: f64, height: f64, label: &str) -> Self {
        let label = escape(label);
        let mut out = String::with_capacity(16 * 1024);
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{label}" font-family="{FONT}"><title>{label}</title>"#,
            n(width),
            n(height)
        );
        Svg { out }
    }

    fn text(&mut self, x: f64, y: f64, font: Font, content: &str) {
        let _ = write!(
            self.out,
            r#"<text x="{}" y="{}" font-size="{}" text-anchor="{}" fill="{}"{}>{}</text>"#,
            n(x),
            n(y),
            n(font.size),
            font.anchor.as_str(),
            font.fill,
            if font.bold {
                r#" font-weight="bold""#
            } else {
                ""
            },
            escape(content)
        );
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), stroke: Stroke) {
        let _ = write!(
            self.out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}""#,
            n(x1),
            n(y1),
            n(x2),
            n(y2),
            stroke.colour,
            n(stroke.width)
        );
        if let Some(dash) = stroke.dash {
            let _ = write!(self.out, r#" stroke-dasharray="{dash}""#);
        }
        self.out.push_str("/>");
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, title: Option<&str>) {
        let _ = write!(
            self.out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{fill}""#,
            n(x),
            n(y),
            n(w.max(0.0)),
            n(h.max(0.0))
        );
        match title {
            Some(t) => {
                let _ = write!(self.out, "><title>{}</title></rect>", escape(t));
            }
            None => self.out.push_str("/>"),
        }
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::{Reader, XmlVersion};

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, m, day).unwrap()
    }

    /// Reads `svg` through quick-xml and panics unless it is one well-formed
    /// `<svg>` element with escaped content. Returns the unescaped text of
    /// every `<text>` element.
    fn check_xml(svg: &str) -> Vec<String> {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.contains("style="), "no style attributes");
        assert!(!svg.contains("<script"), "no script");
        let mut reader = Reader::from_str(svg);
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut texts = Vec::new();
        let mut current = String::new();
        loop {
            let event = reader
                .read_event()
                .unwrap_or_else(|e| panic!("{e} at {}: {svg}", reader.buffer_position()));
            match event {
                Event::Start(e) => {
                    for a in e.attributes().with_checks(true) {
                        a.expect("attribute")
                            .normalized_value(XmlVersion::Implicit1_0)
                            .expect("attribute value");
                    }
                    let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                    if stack.is_empty() {
                        roots += 1;
                        assert_eq!(name, "svg");
                    }
                    if name == "text" {
                        current.clear();
                    }
                    stack.push(name);
                }
                Event::Empty(e) => {
                    assert!(!stack.is_empty(), "element outside the root");
                    for a in e.attributes().with_checks(true) {
                        a.expect("attribute")
                            .normalized_value(XmlVersion::Implicit1_0)
                            .expect("attribute value");
                    }
                }
                Event::End(e) => {
                    let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                    assert_eq!(stack.pop().as_deref(), Some(name.as_str()));
                    if name == "text" {
                        texts.push(current.clone());
                    }
                }
                Event::Text(t) => {
                    assert!(!stack.is_empty(), "text outside the root");
                    current.push_str(&t.decode().unwrap());
                }
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref().expect("char ref") {
                        Some(c) => c,
                        None => match &*r.decode().unwrap() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => panic!("unknown entity &{other};"),
                        },
                    };
                    current.push(c);
                }
                Event::Eof => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
        texts
    }

    #[test]
    #[should_panic]
    fn checker_rejects_unclosed_elements() {
        check_xml(r#"<svg viewBox="0 0 1 1"><g><text>x</text></svg>"#);
    }

    #[test]
    #[should_panic]
    fn checker_rejects_unescaped_markup() {
        check_xml(r#"<svg viewBox="0 0 1 1"><text>a & b</text></svg>"#);
    }

    #[test]
    #[should_panic]
    fn checker_rejects_raw_script() {
        check_xml(r#"<svg viewBox="0 0 1 1"><text><script>alert(1)</script></text></svg>"#);
    }

    fn sample() -> Progress {
        Progress {
            total: 17,
            per_day: vec![(d(5, 17), 3), (d(5, 18), 4), (d(5, 20), 2)],
            start: Some(d(5, 15)),
            deadline: Some(d(5, 20)),
            today: d(5, 21),
        }
    }

    fn rows() -> Vec<CategoryCount> {
        vec![
            CategoryCount {
                category: "乡镇街道".into(),
                registered: 12,
                needs_review: 1,
                missing: 5,
            },
            CategoryCount {
                category: "县直单位".into(),
                registered: 30,
                needs_review: 0,
                missing: 40,
            },
            CategoryCount {
                category: "其他".into(),
                registered: 0,
                needs_review: 2,
                missing: 0,
            },
        ]
    }

    #[test]
    fn escape_handles_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(
            escape(r#"a&b "c" 'd'"#),
            "a&amp;b &quot;c&quot; &#39;d&#39;"
        );
        assert_eq!(escape("x\u{0}\u{b}y\tz\u{fffe}"), "xy z");
        assert_eq!(escape("乡镇街道"), "乡镇街道");
    }

    #[test]
    fn numbers_are_rounded_to_one_decimal() {
        assert_eq!(n(3.0), "3");
        assert_eq!(n(1.25), "1.3");
        assert_eq!(n(12.34), "12.3");
        assert_eq!(n(-0.04), "0");
        assert_eq!(n(-1.5), "-1.5");
        assert_eq!(n(f64::NAN), "0");
    }

    #[test]
    fn progress_shows_cumulative_counts() {
        let svg = progress_chart(&sample());
        let texts = check_xml(&svg);
        assert!(svg.contains(r#"viewBox="0 0 960 400" width="100%" role="img""#));
        assert!(
            svg.contains("<title>5月17日：累计 3 个单位</title>"),
            "{svg}"
        );
        assert!(svg.contains("<title>5月18日：累计 7 个单位</title>"));
        assert!(svg.contains("<title>5月20日：累计 9 个单位</title>"));
        assert!(svg.contains("<title>5月18日：当日新登记 4 个单位</title>"));
        for expected in [
            "登记进度（累计已登记单位）",
            "应报 17 个单位",
            "截止 5月20日",
            "今天",
            "5月15日",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "{expected} missing in {texts:?}"
            );
        }
        assert!(texts.iter().any(|t| t.contains("已登记 9 / 17")));
        assert!(!svg.contains("尚无单位登记"));
        assert!(
            svg.contains(r#"aria-label="登记进度：应报 17 个单位，已登记 9 个单位，截止 5月20日""#)
        );
    }

    #[test]
    fn progress_is_deterministic_and_tolerates_unsorted_input() {
        assert_eq!(progress_chart(&sample()), progress_chart(&sample()));
        let mut shuffled = sample();
        shuffled.per_day = vec![
            (d(5, 20), 2),
            (d(5, 17), 1),
            (d(5, 18), 4),
            (d(5, 17), 2),
            (d(5, 19), 0),
        ];
        assert_eq!(progress_chart(&shuffled), progress_chart(&sample()));
    }

    #[test]
    fn progress_without_registrations() {
        let p = Progress {
            per_day: vec![],
            ..sample()
        };
        let svg = progress_chart(&p);
        let texts = check_xml(&svg);
        assert!(texts.iter().any(|t| t == "尚无单位登记"));
        assert!(!svg.contains("累计 "));

        let p = Progress {
            total: 5,
            per_day: vec![],
            start: None,
            deadline: None,
            today: d(5, 1),
        };
        let texts = check_xml(&progress_chart(&p));
        assert!(texts.iter().any(|t| t == "尚无单位登记"));
        assert!(texts.iter().any(|t| t == "5月1日"));
        assert!(!texts.iter().any(|t| t.starts_with("截止")));
    }

    #[test]
    fn progress_edge_cases_stay_well_formed() {
        let zero = Progress {
            total: 0,
            per_day: vec![],
            start: None,
            deadline: None,
            today: d(5, 1),
        };
        let texts = check_xml(&progress_chart(&zero));
        assert!(texts.iter().any(|t| t == "应报 0 个单位"));

        // More registered than on the roster.
        let over = Progress {
            total: 0,
            ..sample()
        };
        check_xml(&progress_chart(&over));

        // Deadline before the start: the domain is widened to show it.
        let early = Progress {
            deadline: Some(d(5, 10)),
            ..sample()
        };
        let texts = check_xml(&progress_chart(&early));
        assert!(texts.iter().any(|t| t == "截止 5月10日"));
        assert!(texts.iter().any(|t| t == "5月10日"));

        // A single day: start = today = deadline = the only arrival.
        let one = Progress {
            total: 3,
            per_day: vec![(d(5, 20), 3)],
            start: Some(d(5, 20)),
            deadline: Some(d(5, 20)),
            today: d(5, 20),
        };
        let svg = progress_chart(&one);
        check_xml(&svg);
        assert!(svg.contains("<title>5月20日：累计 3 个单位</title>"));

        // Today before the campaign starts, arrival after today (clock skew).
        let skew = Progress {
            today: d(5, 1),
            per_day: vec![(d(5, 30), 1)],
            ..sample()
        };
        check_xml(&progress_chart(&skew));

        // Absurd dates must not hang or panic.
        let absurd = Progress {
            deadline: Some(NaiveDate::MIN),
            today: NaiveDate::MAX,
            ..sample()
        };
        let texts = check_xml(&progress_chart(&absurd));
        assert!(texts.len() < 40);

        // Huge counts.
        let huge = Progress {
            total: usize::MAX,
            per_day: vec![(d(5, 17), usize::MAX), (d(5, 18), 5)],
            ..sample()
        };
        check_xml(&progress_chart(&huge));
    }

    #[test]
    fn long_spans_thin_out_date_labels() {
        let start = d(1, 1);
        let per_day = (0..150u64)
            .step_by(3)
            .map(|i| (start + Days::new(i), 1))
            .collect();
        let p = Progress {
            total: 60,
            per_day,
            start: Some(start),
            deadline: Some(start + Days::new(140)),
            today: start + Days::new(149),
        };
        let svg = progress_chart(&p);
        let texts = check_xml(&svg);
        let dates = texts
            .iter()
            .filter(|t| t.ends_with('日') && !t.starts_with("截止"))
            .count();
        assert!((5..=16).contains(&dates), "{dates} date labels");
        assert!(svg.contains("<title>5月28日：累计 50 个单位</title>"));

        // Across a new year the year is written.
        let p = Progress {
            start: Some(d(12, 20)),
            deadline: None,
            today: d(12, 31) + Days::new(10),
            ..sample()
        };
        let p = Progress {
            per_day: vec![
                (d(12, 22), 2),
                (NaiveDate::from_ymd_opt(2026, 1, 3).unwrap(), 1),
            ],
            ..p
        };
        let svg = progress_chart(&p);
        let texts = check_xml(&svg);
        assert!(texts.iter().any(|t| t == "2025年12月20日"), "{texts:?}");
        assert!(texts.iter().any(|t| t.starts_with("2026年")), "{texts:?}");
        assert!(svg.contains("<title>2026年1月3日：累计 3 个单位</title>"));
    }

    #[test]
    fn category_chart_draws_segments_and_legend() {
        let svg = category_chart(&rows());
        let texts = check_xml(&svg);
        for expected in [
            "各类单位报送情况",
            "已登记",
            "待人工处理",
            "未报送",
            "乡镇街道",
            "县直单位",
            "12",
            "30",
            "40",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "{expected} missing in {texts:?}"
            );
        }
        assert!(svg.contains("<title>县直单位：已登记 30 个</title>"));
        assert!(svg.contains("<title>县直单位：未报送 40 个</title>"));
        // Zero segments are not drawn.
        assert!(!svg.contains("县直单位：待人工处理 0 个</title>"));
        assert!(!svg.contains("其他：已登记 0 个</title>"));
        assert!(!texts.iter().any(|t| t == "0"));
        assert!(svg.contains(r#"fill="url(#xxdc-chart-missing-hatch)""#));
        assert!(svg.contains(&format!(r#"<pattern id="{MISSING_PATTERN_ID}""#)));
        assert_eq!(MISSING_FILL, format!("url(#{MISSING_PATTERN_ID})"));
        assert_eq!(category_chart(&rows()), svg);
    }

    #[test]
    fn category_numbers_too_wide_go_after_the_bar() {
        let rows = vec![
            CategoryCount {
                category: "大".into(),
                registered: 500,
                needs_review: 1,
                missing: 1,
            },
            CategoryCount {
                category: "小".into(),
                registered: 1,
                needs_review: 0,
                missing: 0,
            },
            CategoryCount {
                category: "空".into(),
                registered: 0,
                needs_review: 0,
                missing: 0,
            },
        ];
        let svg = category_chart(&rows);
        let texts = check_xml(&svg);
        assert!(texts.iter().any(|t| t == "待人工处理 1"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "未报送 1"));
        assert!(texts.iter().any(|t| t == "已登记 1"));
        assert!(texts.iter().any(|t| t == "（无单位）"));
        let layouts = fit_rows(&rows, 60.0, 944.0, 502);
        assert!(layouts[0].segments[0].inside);
        assert!(!layouts[0].segments[1].inside);
        assert!(layouts.iter().all(|l| l.end <= 944.0), "{layouts:?}");
        // Adjacent segments touch.
        assert_eq!(layouts[0].segments[0].x1, layouts[0].segments[1].x0);
    }

    #[test]
    fn category_names_are_escaped() {
        let rows = vec![
            CategoryCount {
                category: "<script>alert(1)</script>".into(),
                registered: 1,
                needs_review: 2,
                missing: 3,
            },
            CategoryCount {
                category: "A&B \"x\" 'y'".into(),
                registered: 4,
                needs_review: 0,
                missing: 0,
            },
        ];
        let svg = category_chart(&rows);
        assert!(!svg.contains("<script"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let texts = check_xml(&svg);
        assert!(texts.iter().any(|t| t == "<script>alert(1)</script>"));
        assert!(texts.iter().any(|t| t == "A&B \"x\" 'y'"));
    }

    #[test]
    fn category_edge_cases() {
        let svg = category_chart(&[]);
        let texts = check_xml(&svg);
        assert!(texts.iter().any(|t| t == "暂无单位"));

        let zeros = vec![CategoryCount {
            category: "乡镇街道".into(),
            registered: 0,
            needs_review: 0,
            missing: 0,
        }];
        check_xml(&category_chart(&zeros));

        let long = "很长的单位类别名称".repeat(10);
        let rows = vec![
            CategoryCount {
                category: long.clone(),
                registered: 3,
                needs_review: 0,
                missing: 1,
            },
            CategoryCount {
                category: "x".into(),
                registered: usize::MAX,
                needs_review: usize::MAX,
                missing: 1,
            },
        ];
        let svg = category_chart(&rows);
        let texts = check_xml(&svg);
        assert!(
            texts
                .iter()
                .any(|t| t.ends_with('…') && t.chars().count() < long.chars().count())
        );
        assert!(svg.contains(&long), "the full name stays in the tooltip");
    }
}
