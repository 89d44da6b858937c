//! The dashboard's chart of the last 24 hours, drawn on the server as SVG: no JavaScript, and
//! it scales to the width of a phone.

use maud::{html, Markup};

use crate::db::admin::HourlyCounts;

/// Hours drawn.
pub const HOURS: usize = 24;

/// The three series per hour, oldest first, for the 24 hours ending with `current_hour`
/// (hours since the epoch).
pub fn by_hour(counts: &HourlyCounts, current_hour: i64) -> Vec<[i64; 3]> {
    let first = current_hour - HOURS as i64 + 1;
    let mut hours = vec![[0i64; 3]; HOURS];
    for (series, rows) in [&counts.received, &counts.done, &counts.dead]
        .iter()
        .enumerate()
    {
        for (hour, n) in rows.iter() {
            if let Some(slot) = usize::try_from(hour - first).ok().filter(|i| *i < HOURS) {
                hours[slot][series] += n;
            }
        }
    }
    hours
}

/// Grouped bars: webhooks received, deliveries done, deliveries dead, per hour.
pub fn last_day(hours: &[[i64; 3]]) -> Markup {
    const WIDTH: f64 = 480.0;
    const HEIGHT: f64 = 150.0;
    const TOP: f64 = 14.0;
    const BOTTOM: f64 = 18.0;
    let names = ["webhooks received", "deliveries done", "deliveries dead"];
    let classes = ["received", "done", "dead"];
    let max = hours.iter().flatten().copied().max().unwrap_or(0).max(1);
    let slot = WIDTH / hours.len().max(1) as f64;
    let bar = (slot - 3.0) / 3.0;
    let plot = HEIGHT - TOP - BOTTOM;
    let totals: Vec<i64> = (0..3).map(|s| hours.iter().map(|h| h[s]).sum()).collect();
    html! {
        svg.chart id="last-day" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
            aria-labelledby="last-day-title" {
            title id="last-day-title" {
                "Last 24 hours, per hour: "
                @for (s, name) in names.iter().enumerate() { (totals[s]) " " (name) @if s < 2 { ", " } }
            }
            line.axis x1="0" y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
            text.tick x="2" y="10" { "max " (max) " per hour" }
            text.tick x="2" y=(HEIGHT - 4.0) { "24 h ago" }
            text.tick x=(WIDTH - 2.0) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
            @for (i, hour) in hours.iter().enumerate() {
                @for s in 0..3 {
                    @let height = plot * hour[s] as f64 / max as f64;
                    @if hour[s] > 0 {
                        rect class=(classes[s]) data-hour=(i) data-n=(hour[s])
                            x=(format!("{:.1}", i as f64 * slot + 1.5 + s as f64 * bar))
                            y=(format!("{:.1}", HEIGHT - BOTTOM - height))
                            width=(format!("{:.1}", bar)) height=(format!("{:.1}", height)) {
                            title { (hour[s]) " " (names[s]) }
                        }
                    }
                }
            }
        }
        p.legend {
            @for (s, name) in names.iter().enumerate() {
                span class={ "key " (classes[s]) } {} " " (name) " (" (totals[s]) ") "
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_fall_in_their_slots_and_older_ones_drop_out() {
        let counts = HourlyCounts {
            received: vec![(100, 5), (99, 2), (50, 9)],
            done: vec![(100, 4)],
            dead: vec![(76, 1), (77, 1)],
        };
        let hours = by_hour(&counts, 100);
        assert_eq!(hours[23], [5, 4, 0]);
        assert_eq!(hours[22], [2, 0, 0]);
        // Hour 77 is the first of the 24 ending with hour 100; 76 and 50 are older.
        assert_eq!(hours[0], [0, 0, 1]);
        assert_eq!(hours.iter().flatten().sum::<i64>(), 12);
        let svg = last_day(&hours).into_string();
        assert!(
            svg.contains("7 webhooks received, 4 deliveries done, 1 deliveries dead"),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 4);
    }
}
