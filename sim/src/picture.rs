//! A run as a picture: a self-contained SVG sequence diagram a person would rather look at
//! than the text trace. One lane per host (the broker's in the middle), one row per trace
//! entry in order, packets as arrows between a client's lane and the broker's with their type
//! and ids, faults as red bands across the diagram (partitions and holds also shade the lanes
//! they cut until they are undone), steps as grey rules, and the entry a checker blamed
//! highlighted. Hovering a row shows its full trace line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::trace::{summarize, Entry, Event, Trace};

const ROW: usize = 18;
const LANE: usize = 150;
const LEFT: usize = 80;
const TOP: usize = 40;

/// Rows drawn at most: a longer trace is shown around the blamed entry (or its end).
const ROWS_MAX: usize = 2000;

/// Text made safe for XML: markup escaped, control characters (invalid in XML) shown as `?`.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            c if c.is_control() => "?".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The hosts in lane order: clients in order of first appearance, the broker in the middle.
fn lanes(trace: &Trace) -> Vec<String> {
    let mut clients: Vec<String> = Vec::new();
    for e in &trace.entries {
        if e.host != "director" && !clients.contains(&e.host) {
            clients.push(e.host.clone());
        }
    }
    let middle = clients.len().div_ceil(2);
    let mut lanes = clients[..middle].to_vec();
    lanes.push("broker".into());
    lanes.extend_from_slice(&clients[middle..]);
    lanes
}

/// The picture of `trace`, with entry `blamed` highlighted; at most `ROWS_MAX` rows, around
/// the blamed entry (or the end) when the trace is longer.
pub fn svg(trace: &Trace, blamed: Option<usize>) -> String {
    if trace.entries.len() <= ROWS_MAX {
        return draw(trace, blamed);
    }
    let centre = blamed.unwrap_or(trace.entries.len() - 1);
    let start = centre
        .saturating_sub(ROWS_MAX / 2)
        .min(trace.entries.len() - ROWS_MAX);
    let window = Trace {
        entries: trace.entries[start..start + ROWS_MAX].to_vec(),
        broker_counters: Default::default(),
    };
    draw(&window, blamed.map(|b| b - start))
}

fn draw(trace: &Trace, blamed: Option<usize>) -> String {
    let lanes = lanes(trace);
    let x: BTreeMap<&str, usize> = lanes
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), LEFT + LANE / 2 + i * LANE))
        .collect();
    let width = LEFT + lanes.len() * LANE + 40;
    let height = TOP + trace.entries.len() * ROW + ROW;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    out.push_str(concat!(
        "<defs><marker id=\"head\" markerWidth=\"8\" markerHeight=\"8\" refX=\"7\" refY=\"4\" orient=\"auto\">",
        "<path d=\"M0,0 L8,4 L0,8 z\" fill=\"#333\"/></marker></defs>\n"
    ));
    for (host, &lx) in &x {
        let _ = writeln!(
            out,
            r##"<text x="{lx}" y="{}" text-anchor="middle" font-weight="bold">{}</text><line x1="{lx}" y1="{}" x2="{lx}" y2="{height}" stroke="#bbb"/>"##,
            TOP - 18,
            escape(host),
            TOP - 10
        );
    }
    cut_lanes(&mut out, trace, &x);
    for (i, e) in trace.entries.iter().enumerate() {
        row(&mut out, i, e, &x, width, blamed == Some(i));
    }
    out.push_str("</svg>\n");
    out
}

fn y(i: usize) -> usize {
    TOP + i * ROW + ROW / 2
}

/// Shades a client's lane from the partition or hold that cut it to the repair or release.
fn cut_lanes(out: &mut String, trace: &Trace, x: &BTreeMap<&str, usize>) {
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let end = trace.entries.len();
    let mut spans = Vec::new();
    for (i, e) in trace.entries.iter().enumerate() {
        if let Event::Fault(text) = &e.event {
            let f = crate::checkers::fault_hosts(text);
            for host in f.1.iter().filter(|h| *h != "broker") {
                match f.0.as_str() {
                    "partition" | "hold" => {
                        open.entry(host.clone()).or_insert(i);
                    }
                    "repair" | "release" => {
                        if let Some(from) = open.remove(host) {
                            spans.push((host.clone(), from, i));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    spans.extend(open.into_iter().map(|(h, from)| (h, from, end)));
    for (host, from, to) in spans {
        if let Some(&lx) = x.get(host.as_str()) {
            let _ = writeln!(
                out,
                r##"<rect x="{}" y="{}" width="16" height="{}" fill="#e33" opacity="0.25"/>"##,
                lx - 8,
                y(from),
                (to - from) * ROW
            );
        }
    }
}

fn row(
    out: &mut String,
    i: usize,
    e: &Entry,
    x: &BTreeMap<&str, usize>,
    width: usize,
    blamed: bool,
) {
    let ry = y(i);
    let _ = write!(out, "<g><title>{}</title>", escape(&e.line()));
    if blamed {
        let _ = write!(
            out,
            r##"<rect x="0" y="{}" width="{width}" height="{ROW}" fill="#ffd84d"/>"##,
            ry - ROW / 2
        );
    }
    let _ = write!(
        out,
        r##"<text x="4" y="{}" fill="#666">{:.3}s</text>"##,
        ry + 4,
        e.at.as_secs_f64()
    );
    let lane = x.get(e.host.as_str()).copied();
    let broker = x["broker"];
    match (&e.event, lane) {
        (Event::Step { index, text }, _) => {
            let short: String = text.chars().take(90).collect();
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" y1="{ry}" x2="{width}" y2="{ry}" stroke="#ddd"/><text x="{}" y="{}" fill="#888">step {index}: {}</text>"##,
                LEFT + 4,
                ry - 2,
                escape(&short)
            );
        }
        (Event::Fault(text), _) => {
            let _ = write!(
                out,
                r##"<rect x="{LEFT}" y="{}" width="{}" height="{}" fill="#e33" opacity="0.35"/><text x="{}" y="{}" fill="#900" font-weight="bold">{}</text>"##,
                ry - ROW / 2 + 2,
                width - LEFT,
                ROW - 4,
                LEFT + 4,
                ry + 4,
                escape(text)
            );
        }
        (Event::Sent(p), Some(from)) => arrow(out, from, broker, ry, &summarize(p)),
        (Event::Received(p), Some(to)) => arrow(out, broker, to, ry, &summarize(p)),
        (event, Some(lx)) => {
            let (colour, label) = match event {
                Event::Delivered { .. } => ("#070", e.line()),
                Event::ClientError(_) | Event::ConnectFailed(_) => ("#c00", e.line()),
                _ => ("#555", e.line()),
            };
            let label = label
                .split_whitespace()
                .skip(2)
                .collect::<Vec<_>>()
                .join(" ");
            let _ = write!(
                out,
                r##"<circle cx="{lx}" cy="{ry}" r="3" fill="{colour}"/><text x="{}" y="{}" fill="{colour}">{}</text>"##,
                lx + 6,
                ry + 4,
                escape(&label)
            );
        }
        (_, None) => {}
    }
    out.push_str("</g>\n");
}

/// A packet from one lane to another, labelled with its summary (type, ids, topic).
fn arrow(out: &mut String, from: usize, to: usize, ry: usize, label: &str) {
    let label: String = label.chars().take(60).collect();
    let _ = write!(
        out,
        r##"<line x1="{from}" y1="{ry}" x2="{to}" y2="{ry}" stroke="#333" marker-end="url(#head)"/><text x="{}" y="{}" text-anchor="middle">{}</text>"##,
        (from + to) / 2,
        ry - 3,
        escape(&label)
    );
}

/// A self-contained HTML page around the picture.
pub fn html(trace: &Trace, blamed: Option<usize>, title: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n<h3>{}</h3>\n{}</body></html>\n",
        escape(title),
        escape(title),
        svg(trace, blamed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::fault_hosts;
    use std::time::Duration;
    use tern::codec::*;
    use tern::types::{PacketId, QoS};

    /// A small run: a subscriber, a publisher, a partition and a missing delivery.
    fn small() -> Trace {
        let mut t = Trace::default();
        let ms = Duration::from_millis;
        let id = |n| PacketId::new(n).unwrap();
        t.push(
            ms(0),
            "director",
            Event::Step {
                index: 1,
                text: "Connect([s, p])".into(),
            },
        );
        t.push(
            ms(5),
            "s",
            Event::Sent(Packet::Subscribe(Subscribe {
                packet_id: id(1),
                properties: Properties::new(),
                filters: vec![(
                    ByteStr::from_static("a/#"),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                )],
            })),
        );
        t.push(
            ms(15),
            "s",
            Event::Received(Packet::SubAck(SubAck {
                packet_id: id(1),
                properties: Properties::new(),
                reason_codes: vec![ReasonCode::GrantedQoS1],
            })),
        );
        t.push(
            ms(20),
            "director",
            Event::Fault("partition s <-> broker".into()),
        );
        t.push(
            ms(25),
            "p",
            Event::Sent(Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                content: Content::new(
                    ByteStr::from_static("a/b"),
                    bytes::Bytes::from_static(b"<m&1>"),
                ),
                packet_id: Some(id(7)),
                properties: Properties::new(),
            })),
        );
        t.push(
            ms(35),
            "p",
            Event::Received(Packet::PubAck(Ack::new(id(7)))),
        );
        t.push(
            ms(40),
            "director",
            Event::Fault("repair s <-> broker".into()),
        );
        t.push(
            ms(45),
            "s",
            Event::Closed {
                by_client: false,
                normal: false,
            },
        );
        t
    }

    #[test]
    fn the_picture_of_a_small_run() {
        assert_eq!(fault_hosts("partition s <-> broker").1, ["s", "broker"]);
        let svg = svg(&small(), Some(5));
        // Text is escaped: a payload cannot break the document.
        assert!(svg.contains("&lt;m&amp;1&gt;") && !svg.contains("<m&1>"));
        insta::assert_snapshot!(svg);
    }
}
