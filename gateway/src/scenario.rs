//! Fault scenarios: a schedule of faults as a TOML file, the one format the
//! fault soak plays through netsim and `strait drill run` plays against
//! live gateways. A scenario is validated once into typed steps; every
//! error names the file, the line and the key.
//!
//! ```toml
//! [drill]
//! name = "eu-west loses us-east"
//! settle = "60s"          # how long the mesh may take to return after each step
//!
//! [[step]]
//! at = "5s"               # from the start of the run
//! fault = "partition"     # partition | flap | link | kill | freeze | reload
//! from = "eu-west"
//! to = "us-east"
//! one_way = false         # true: only what from sends to `to` is lost
//! for = "20s"
//! ```
//!
//! `flap` takes `on`, `off` and `cycles` (a black hole 5 s on / 2 s off);
//! `link` takes `loss`, `burst_loss` with `burst_length`, `rtt`, `reorder`
//! and `duplicate`; `kill` (down `for`), `freeze` (`for`) and `reload` name
//! a `gateway`. Live gateways can be told only to black-hole a region, so
//! `strait drill run` plays `partition` and `flap` ([`Fault::live`]); the
//! soak plays them all.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::GatewayError;
use crate::config::Source;

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: Option<String>,
    /// How long the mesh may take to return to where it was after a step.
    pub settle: Duration,
    /// In the order they start; each begins after the one before ended.
    pub steps: Vec<Step>,
}

/// Default `[drill] settle`.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its line in the file (0 for a scenario built in code).
    pub line: usize,
    /// From the start of the run.
    pub at: Duration,
    pub fault: Fault,
}

/// Changes to a link while a `link` fault lasts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkFault {
    pub loss: Option<f64>,
    /// (loss while in a burst, mean burst length in packets).
    pub burst: Option<(f64, f64)>,
    pub rtt: Option<Duration>,
    pub reorder: Option<f64>,
    pub duplicate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Nothing passes between the regions (from `from` to `to` only, when
    /// one way).
    Partition {
        from: String,
        to: String,
        one_way: bool,
        duration: Duration,
    },
    /// A black hole between the regions, `on` then lifted for `off`,
    /// `cycles` times.
    Flap {
        from: String,
        to: String,
        on: Duration,
        off: Duration,
        cycles: u32,
    },
    Link {
        from: String,
        to: String,
        one_way: bool,
        duration: Duration,
        change: LinkFault,
    },
    /// SIGKILL, and a restart after `down`.
    Kill { gateway: String, down: Duration },
    /// SIGSTOP, and SIGCONT after `duration`.
    Freeze { gateway: String, duration: Duration },
    /// SIGHUP: the gateway reloads its configuration.
    Reload { gateway: String },
}

impl Fault {
    /// How long the fault lasts.
    pub fn duration(&self) -> Duration {
        match self {
            Fault::Partition { duration, .. }
            | Fault::Link { duration, .. }
            | Fault::Freeze { duration, .. } => *duration,
            Fault::Flap {
                on, off, cycles, ..
            } => (*on + *off) * *cycles,
            Fault::Kill { down, .. } => *down,
            Fault::Reload { .. } => Duration::ZERO,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Flap { .. } => "flap",
            Fault::Link { .. } => "link",
            Fault::Kill { .. } => "kill",
            Fault::Freeze { .. } => "freeze",
            Fault::Reload { .. } => "reload",
        }
    }

    /// Whether live gateways can play it (through their drill endpoint);
    /// the reason when not.
    pub fn live(&self) -> Result<(), String> {
        match self {
            Fault::Partition { .. } | Fault::Flap { .. } => Ok(()),
            other => Err(format!(
                "{} needs netsim or the soak's own processes; against live gateways a scenario plays partition and flap",
                other.kind()
            )),
        }
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        let arrow = |one_way: bool| if one_way { "->" } else { "<->" };
        match self {
            Fault::Partition {
                from,
                to,
                one_way,
                duration,
            } => format!(
                "partition {from}{}{to} for {}",
                arrow(*one_way),
                human(*duration)
            ),
            Fault::Flap {
                from,
                to,
                on,
                off,
                cycles,
            } => format!(
                "black hole {} on / {} off x{cycles} {from}<->{to}",
                human(*on),
                human(*off)
            ),
            Fault::Link {
                from,
                to,
                one_way,
                change,
                duration,
            } => {
                let mut what = Vec::new();
                if let Some((p, len)) = change.burst {
                    what.push(format!("loss bursts {:.0}% (~{len} packets)", p * 100.0));
                }
                if let Some(p) = change.loss {
                    what.push(format!("loss {}%", p * 100.0));
                }
                if let Some(rtt) = change.rtt {
                    what.push(format!("RTT {}", human(rtt)));
                }
                if let Some(p) = change.reorder {
                    what.push(format!("reordering {}%", p * 100.0));
                }
                if let Some(p) = change.duplicate {
                    what.push(format!("duplication {}%", p * 100.0));
                }
                format!(
                    "{} {from}{}{to} for {}",
                    what.join(", "),
                    arrow(*one_way),
                    human(*duration)
                )
            }
            Fault::Kill { gateway, down } => {
                format!("SIGKILL {gateway}, restart after {}", human(*down))
            }
            Fault::Freeze { gateway, duration } => {
                format!("SIGSTOP {gateway} for {}", human(*duration))
            }
            Fault::Reload { gateway } => format!("reload {gateway}"),
        }
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    drill: Option<RawDrill>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    name: Option<String>,
    settle: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Spanned<String>,
    fault: Spanned<String>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    one_way: Option<Spanned<bool>>,
    #[serde(rename = "for")]
    duration: Option<Spanned<String>>,
    on: Option<Spanned<String>>,
    off: Option<Spanned<String>>,
    cycles: Option<Spanned<u32>>,
    gateway: Option<Spanned<String>>,
    loss: Option<Spanned<f64>>,
    burst_loss: Option<Spanned<f64>>,
    burst_length: Option<Spanned<f64>>,
    rtt: Option<Spanned<String>>,
    reorder: Option<Spanned<f64>>,
    duplicate: Option<Spanned<f64>>,
}

impl RawStep {
    /// The keys given, with their spans, for "not for this fault" errors.
    fn given(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        fn s<T>(v: &Option<Spanned<T>>) -> Option<std::ops::Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        [
            ("from", s(&self.from)),
            ("to", s(&self.to)),
            ("one_way", s(&self.one_way)),
            ("for", s(&self.duration)),
            ("on", s(&self.on)),
            ("off", s(&self.off)),
            ("cycles", s(&self.cycles)),
            ("gateway", s(&self.gateway)),
            ("loss", s(&self.loss)),
            ("burst_loss", s(&self.burst_loss)),
            ("burst_length", s(&self.burst_length)),
            ("rtt", s(&self.rtt)),
            ("reorder", s(&self.reorder)),
            ("duplicate", s(&self.duplicate)),
        ]
        .into_iter()
        .filter_map(|(k, span)| Some((k, span?)))
        .collect()
    }
}

/// What each fault takes.
const KEYS: &[(&str, &[&str])] = &[
    ("partition", &["from", "to", "one_way", "for"]),
    ("flap", &["from", "to", "on", "off", "cycles"]),
    (
        "link",
        &[
            "from",
            "to",
            "one_way",
            "for",
            "loss",
            "burst_loss",
            "burst_length",
            "rtt",
            "reorder",
            "duplicate",
        ],
    ),
    ("kill", &["gateway", "for"]),
    ("freeze", &["gateway", "for"]),
    ("reload", &["gateway"]),
];

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|source| GatewayError::Io {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Scenario, GatewayError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| GatewayError::Toml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let src = Source {
            path,
            text,
            files_must_exist: false,
        };
        let drill = raw.drill.unwrap_or(RawDrill {
            name: None,
            settle: None,
        });
        let settle = match &drill.settle {
            Some(v) => src.duration(v, "drill.settle")?,
            None => DEFAULT_SETTLE,
        };
        if raw.step.is_empty() {
            return Err(GatewayError::Toml {
                path: path.to_owned(),
                message: "no [[step]]: a scenario needs at least one fault".into(),
            });
        }
        let mut steps: Vec<Step> = Vec::new();
        for step in &raw.step {
            let line = src.line(step.span().start);
            let s = step.get_ref();
            let at = src.duration(&s.at, "step.at")?;
            let kind = s.fault.get_ref().as_str();
            let Some((_, allowed)) = KEYS.iter().find(|(k, _)| *k == kind) else {
                return Err(src.err(
                    s.fault.span(),
                    "step.fault",
                    format!(
                        "{kind:?} is not a fault; write one of {}",
                        KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            if let Some((key, span)) = s.given().into_iter().find(|(k, _)| !allowed.contains(k)) {
                return Err(src.err(
                    span,
                    &format!("step.{key}"),
                    format!(
                        "a {kind} step does not take {key}; it takes {}",
                        allowed.join(", ")
                    ),
                ));
            }
            let fault = step_fault(&src, s, kind, step.span())?;
            if let Some(prev) = steps.last() {
                let prev_end = prev.at + prev.fault.duration();
                if at < prev_end {
                    return Err(src.err(
                        s.at.span(),
                        "step.at",
                        format!(
                            "{} begins before the step on line {} ends (at {}); steps run one after another",
                            human(at),
                            prev.line,
                            human(prev_end)
                        ),
                    ));
                }
            }
            steps.push(Step { line, at, fault });
        }
        Ok(Scenario {
            name: drill.name,
            settle,
            steps,
        })
    }

    /// The scenario as a file [`Scenario::parse`] reads back.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[drill]\n");
        if let Some(name) = &self.name {
            let _ = writeln!(out, "name = {}", toml_str(name));
        }
        let _ = writeln!(out, "settle = \"{}\"", human(self.settle));
        for step in &self.steps {
            let _ = write!(
                out,
                "\n# {}\n[[step]]\nat = \"{}\"\nfault = \"{}\"\n",
                step.fault.describe(),
                human(step.at),
                step.fault.kind()
            );
            let regions = |out: &mut String, from: &str, to: &str| {
                let _ = writeln!(out, "from = {}\nto = {}", toml_str(from), toml_str(to));
            };
            match &step.fault {
                Fault::Partition {
                    from,
                    to,
                    one_way,
                    duration,
                } => {
                    regions(&mut out, from, to);
                    let _ = writeln!(out, "one_way = {one_way}\nfor = \"{}\"", human(*duration));
                }
                Fault::Flap {
                    from,
                    to,
                    on,
                    off,
                    cycles,
                } => {
                    regions(&mut out, from, to);
                    let _ = writeln!(
                        out,
                        "on = \"{}\"\noff = \"{}\"\ncycles = {cycles}",
                        human(*on),
                        human(*off)
                    );
                }
                Fault::Link {
                    from,
                    to,
                    one_way,
                    duration,
                    change,
                } => {
                    regions(&mut out, from, to);
                    let _ = writeln!(out, "one_way = {one_way}\nfor = \"{}\"", human(*duration));
                    if let Some(p) = change.loss {
                        let _ = writeln!(out, "loss = {p:?}");
                    }
                    if let Some((p, len)) = change.burst {
                        let _ = writeln!(out, "burst_loss = {p:?}\nburst_length = {len:?}");
                    }
                    if let Some(rtt) = change.rtt {
                        let _ = writeln!(out, "rtt = \"{}\"", human(rtt));
                    }
                    if let Some(p) = change.reorder {
                        let _ = writeln!(out, "reorder = {p:?}");
                    }
                    if let Some(p) = change.duplicate {
                        let _ = writeln!(out, "duplicate = {p:?}");
                    }
                }
                Fault::Kill {
                    gateway,
                    down: duration,
                }
                | Fault::Freeze { gateway, duration } => {
                    let _ = writeln!(
                        out,
                        "gateway = {}\nfor = \"{}\"",
                        toml_str(gateway),
                        human(*duration)
                    );
                }
                Fault::Reload { gateway } => {
                    let _ = writeln!(out, "gateway = {}", toml_str(gateway));
                }
            }
        }
        out
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn step_fault(
    src: &Source,
    s: &RawStep,
    kind: &str,
    span: std::ops::Range<usize>,
) -> Result<Fault, GatewayError> {
    let missing = |key: &str| {
        src.err(
            span.clone(),
            &format!("step.{key}"),
            format!("a {kind} step needs {key}"),
        )
    };
    let region = |v: &Option<Spanned<String>>, key: &str| -> Result<String, GatewayError> {
        let v = v.as_ref().ok_or_else(|| missing(key))?;
        src.name(v, &format!("step.{key}"))
    };
    let duration = |v: &Option<Spanned<String>>, key: &str| -> Result<Duration, GatewayError> {
        let v = v.as_ref().ok_or_else(|| missing(key))?;
        let d = src.duration(v, &format!("step.{key}"))?;
        if d.is_zero() {
            return Err(src.err(v.span(), &format!("step.{key}"), "must be above zero"));
        }
        Ok(d)
    };
    let ratio = |v: &Option<Spanned<f64>>, key: &str| -> Result<Option<f64>, GatewayError> {
        match v {
            None => Ok(None),
            Some(v) if (0.0..=1.0).contains(v.get_ref()) => Ok(Some(*v.get_ref())),
            Some(v) => Err(src.err(
                v.span(),
                &format!("step.{key}"),
                format!(
                    "{} is not a ratio from 0 to 1 (write 0.02 for 2%)",
                    v.get_ref()
                ),
            )),
        }
    };
    let one_way = s.one_way.as_ref().is_some_and(|v| *v.get_ref());
    let pair = || -> Result<(String, String), GatewayError> {
        let (from, to) = (region(&s.from, "from")?, region(&s.to, "to")?);
        if from == to {
            let span = s.to.as_ref().map_or(span.clone(), Spanned::span);
            return Err(src.err(
                span,
                "step.to",
                format!("{to:?} is also `from`; a fault is between two regions"),
            ));
        }
        Ok((from, to))
    };
    Ok(match kind {
        "partition" => {
            let (from, to) = pair()?;
            Fault::Partition {
                from,
                to,
                one_way,
                duration: duration(&s.duration, "for")?,
            }
        }
        "flap" => {
            let (from, to) = pair()?;
            let cycles = s.cycles.as_ref().map_or(2, |c| *c.get_ref());
            if cycles == 0 {
                let span = s.cycles.as_ref().map_or(span.clone(), Spanned::span);
                return Err(src.err(span, "step.cycles", "must be at least 1"));
            }
            Fault::Flap {
                from,
                to,
                on: match &s.on {
                    Some(_) => duration(&s.on, "on")?,
                    None => Duration::from_secs(5),
                },
                off: match &s.off {
                    Some(_) => duration(&s.off, "off")?,
                    None => Duration::from_secs(2),
                },
                cycles,
            }
        }
        "link" => {
            let (from, to) = pair()?;
            let burst = match (ratio(&s.burst_loss, "burst_loss")?, &s.burst_length) {
                (None, None) => None,
                (Some(p), Some(len)) if *len.get_ref() >= 1.0 => Some((p, *len.get_ref())),
                (Some(_), Some(len)) => {
                    return Err(src.err(
                        len.span(),
                        "step.burst_length",
                        "is a mean in packets, at least 1",
                    ));
                }
                (Some(_), None) => return Err(missing("burst_length (with burst_loss)")),
                (None, Some(_)) => return Err(missing("burst_loss (with burst_length)")),
            };
            let change = LinkFault {
                loss: ratio(&s.loss, "loss")?,
                burst,
                rtt: s
                    .rtt
                    .as_ref()
                    .map(|v| src.duration(v, "step.rtt"))
                    .transpose()?,
                reorder: ratio(&s.reorder, "reorder")?,
                duplicate: ratio(&s.duplicate, "duplicate")?,
            };
            if change == LinkFault::default() {
                return Err(missing(
                    "at least one of loss, burst_loss, rtt, reorder, duplicate",
                ));
            }
            Fault::Link {
                from,
                to,
                one_way,
                duration: duration(&s.duration, "for")?,
                change,
            }
        }
        "kill" => Fault::Kill {
            gateway: region(&s.gateway, "gateway")?,
            down: duration(&s.duration, "for")?,
        },
        "freeze" => Fault::Freeze {
            gateway: region(&s.gateway, "gateway")?,
            duration: duration(&s.duration, "for")?,
        },
        _ => Fault::Reload {
            gateway: region(&s.gateway, "gateway")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[drill]
name = "rehearsal"
settle = "30s"

[[step]]
at = "5s"
fault = "partition"
from = "eu-west"
to = "us-east"
for = "20s"

[[step]]
at = "30s"
fault = "flap"
from = "eu-west"
to = "ap-south"

[[step]]
at = "50s"
fault = "link"
from = "eu-west"
to = "us-east"
for = "6s"
burst_loss = 0.3
burst_length = 8.0
rtt = "750ms"

[[step]]
at = "1m"
fault = "kill"
gateway = "gw-u1"
for = "3s"
"#;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(Path::new("drill.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_scenario_reads_into_steps_and_writes_back_the_same() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.settle, Duration::from_secs(30));
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.steps[0].line, 6);
        assert_eq!(
            s.steps[1].fault,
            Fault::Flap {
                from: "eu-west".into(),
                to: "ap-south".into(),
                on: Duration::from_secs(5),
                off: Duration::from_secs(2),
                cycles: 2
            }
        );
        assert!(s.steps[1].fault.live().is_ok());
        assert!(
            s.steps[3]
                .fault
                .live()
                .unwrap_err()
                .starts_with("kill needs netsim")
        );
        let again = parse(&s.to_toml()).unwrap();
        let strip = |s: &Scenario| {
            s.steps
                .iter()
                .map(|st| (st.at, st.fault.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&again), strip(&s));
        assert_eq!(again.name.as_deref(), Some("rehearsal"));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = parse(&GOOD.replace("fault = \"flap\"", "fault = \"flood\"")).unwrap_err();
        assert!(
            e.starts_with("drill.toml:15: step.fault: \"flood\" is not a fault"),
            "{e}"
        );
        let e = parse(&GOOD.replace(
            "gateway = \"gw-u1\"",
            "gateway = \"gw-u1\"\nfrom = \"eu-west\"",
        ))
        .unwrap_err();
        assert!(
            e.contains(":33: step.from: a kill step does not take from"),
            "{e}"
        );
        let e = parse(&GOOD.replace("at = \"30s\"", "at = \"20s\"")).unwrap_err();
        assert!(
            e.contains(":14: step.at: 20s begins before the step on line 6 ends (at 25s)"),
            "{e}"
        );
        let e = parse(&GOOD.replace("burst_loss = 0.3", "burst_loss = 30")).unwrap_err();
        assert!(
            e.contains("step.burst_loss: 30 is not a ratio from 0 to 1"),
            "{e}"
        );
        let e =
            parse(&GOOD.replace("to = \"us-east\"\nfor = \"20s\"", "for = \"20s\"")).unwrap_err();
        assert!(e.contains(":6: step.to: a partition step needs to"), "{e}");
        let e = parse(&GOOD.replace("for = \"20s\"", "for = \"soon\"")).unwrap_err();
        assert!(
            e.contains(":11: step.for: \"soon\" is not a duration"),
            "{e}"
        );
        let e = parse("[drill]\nname = \"x\"\n").unwrap_err();
        assert!(e.contains("no [[step]]"), "{e}");
        let e =
            parse(&GOOD.replace("settle = \"30s\"", "settle = \"30s\"\nspeed = 1")).unwrap_err();
        assert!(e.contains("speed"), "{e}");
    }
}
