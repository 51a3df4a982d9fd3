//! `strait why SERVICE`: the routing plane's decision for the next stream
//! of an imported service, read from the gateway's `/why` (the same
//! `plan` that routes streams), as a table or JSON.

use std::process::ExitCode;

use serde_json::Value;

use crate::args::Why;
use crate::commands::status::get_json;

pub fn run(args: Why) -> anyhow::Result<ExitCode> {
    let path = format!("/why?service={}", args.service);
    let decision = get_json(&args.admin, &path)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else {
        print!("{}", render(&decision));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(d: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let prefer: Vec<String> = d["prefer"]
        .as_array()
        .map(|p| p.iter().map(text).collect())
        .unwrap_or_default();
    let mut out = format!(
        "service {}  prefer [{}]  {}\n\n",
        text(&d["service"]),
        prefer.join(", "),
        if d["idempotent"].as_bool() == Some(true) {
            "idempotent: replays any failed attempt"
        } else {
            "not idempotent: replays only on proof of non-delivery"
        }
    );
    let chosen = d["chosen"].as_u64();
    let local_chosen = d["local"].as_bool() == Some(true);
    let rows: Vec<[String; 6]> = d["candidates"]
        .as_array()
        .map(|c| c.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let verdict = match text(&c["verdict"]).as_str() {
                "ranked" => format!(
                    "rank {} (tier {}, {})",
                    c["rank"],
                    c["tier"],
                    text(&c["class"]).replace('_', " ")
                ),
                _ => format!("excluded: {}", text(&c["reason"]).replace('_', " ")),
            };
            let rtt = c["rtt_us"]
                .as_u64()
                .map(|us| format!("{:.1} ms", us as f64 / 1e3))
                .unwrap_or_else(|| "-".into());
            let is_local = c["local"].as_bool() == Some(true);
            let relay_matches = c["relay_to"] == d["relay_to"];
            let mark = if (chosen.is_some() && c["conn"].as_u64() == chosen && relay_matches)
                || (is_local && local_chosen)
            {
                "->"
            } else {
                ""
            };
            // Gateways sharing a certificate share a name: the instance
            // tells them apart.
            let mut gateway = match (is_local, text(&c["instance"])) {
                (true, _) => format!("local target {}", text(&c["name"])),
                (false, i) if i.is_empty() || i == "-" => text(&c["name"]),
                (false, i) => format!("{} ({i})", text(&c["name"])),
            };
            if let Some(lane) = c["lane"].as_u64().filter(|l| *l > 0) {
                gateway += &format!(" lane {lane}");
            }
            if let Some(to) = c["relay_to"].as_str() {
                gateway += &format!(" relaying to {to}");
            }
            [
                mark.to_owned(),
                text(&c["region"]),
                gateway,
                match (is_local, c["conn"].as_u64()) {
                    (true, _) => "-".into(),
                    (false, Some(n)) => format!("c{n}"),
                    (false, None) => "none".into(),
                },
                rtt,
                verdict,
            ]
        })
        .collect();
    let header = ["", "REGION", "GATEWAY", "CONN", "RTT", "VERDICT"].map(String::from);
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out += "\n";
    }
    out += &match d["candidates"].as_array().map(Vec::len) {
        Some(0) | None => "\nno tunnel knows this service: the next client is reset\n".to_owned(),
        _ if chosen.is_none() && !local_chosen => {
            "\nno candidate is eligible: the next client is reset\n".to_owned()
        }
        _ => {
            "\n-> marks where the next stream would go (power of two choices among the best rank)\n"
                .to_owned()
        }
    };
    out
}
