//! Calls per minute by action as a stacked bar chart, drawn on the server
//! as inline SVG (no chart library, no script).

use maud::{Markup, html};

/// The actions, bottom to top, with their CSS class.
pub const ACTIONS: [&str; 4] = ["pass", "tag", "divert", "reject"];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;

/// `buckets[i][a]`: calls per minute of action `ACTIONS[a]` in bucket `i`
/// (oldest first). `label_every` buckets get a tick labelled by `label(i)`.
pub fn stacked(
    title: &str,
    buckets: &[[f64; 4]],
    label_every: usize,
    label: impl Fn(usize) -> String,
) -> Markup {
    let max = buckets
        .iter()
        .map(|b| b.iter().sum::<f64>())
        .fold(0.0, f64::max)
        .max(1.0);
    let n = buckets.len().max(1) as f64;
    let bar = (WIDTH - LEFT) / n;
    let plot = HEIGHT - BOTTOM;
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(plot) x2=(WIDTH) y2=(plot) {}
                text.tick x=(LEFT - 4.0) y="10" text-anchor="end" { (format_rate(max)) }
                text.tick x=(LEFT - 4.0) y=(plot) text-anchor="end" { "0" }
                @for (i, b) in buckets.iter().enumerate() {
                    @let x = LEFT + i as f64 * bar;
                    @let mut y = plot;
                    @for (a, v) in b.iter().enumerate() {
                        @if *v > 0.0 {
                            @let h = v / max * (plot - 4.0);
                            @let top = { y -= h; y };
                            rect class=(ACTIONS[a]) x=(fmt(x + 0.5)) y=(fmt(top)) width=(fmt((bar - 1.0).max(0.5))) height=(fmt(h)) {
                                title { (ACTIONS[a]) ": " (format_rate(*v)) " calls/min" }
                            }
                        }
                    }
                    @if label_every > 0 && i % label_every == 0 {
                        text.tick x=(fmt(x)) y=(HEIGHT - 4.0) { (label(i)) }
                    }
                }
            }
            p.legend {
                @for a in ACTIONS { span class=(format!("swatch {a}")) {} (a) " " }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

fn format_rate(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_bucket_and_skip_empty_actions() {
        let svg =
            stacked("t", &[[2.0, 0.0, 0.0, 2.0], [0.0; 4]], 1, |i| i.to_string()).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("class=\"reject\""));
        assert!(svg.contains(">4.0<"), "the axis shows the maximum: {svg}");
    }
}
