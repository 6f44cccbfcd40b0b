//! The benchmark's results as `report.md` (the README's performance section) and
//! `report.json`, with every target of the benchmark issue stated as met or not.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::measure::Cost;

/// Samples of one measured quantity; median with min–max.
#[derive(Default)]
pub struct Stat {
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn summary(&self) -> Option<(f64, f64, f64)> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v = self.samples.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        Some((v[v.len() / 2], v[0], v[v.len() - 1]))
    }

    pub fn median(&self) -> Option<f64> {
        self.summary().map(|s| s.0)
    }
}

/// Readiness of one server setup over many runs.
pub struct ReadyRow {
    pub name: String,
    pub signalled: Stat,
    pub served: Stat,
    /// Connection attempts refused after the ready signal, over all runs.
    pub refused_after_signal: u32,
}

/// One scale run: `clients` concurrent clients, each `rounds` checked image round trips.
/// `result` is the load's outcome: wall seconds and bytes moved each way.
pub struct ScaleRow {
    pub path: String,
    pub clients: u32,
    pub rounds: u32,
    pub result: Result<(f64, u64), String>,
}

pub struct Results {
    pub mode: &'static str,
    pub paths: Vec<String>,
    pub tests: Vec<&'static str>,
    /// `traffic[t][p]`: test `t` over path `p`, ops/s.
    pub traffic: Vec<Vec<Stat>>,
    pub unmeasured: Vec<(String, String)>,
    pub ready: Vec<ReadyRow>,
    pub idle_kib: f64,
    pub busy_kib: f64,
    pub held: usize,
    pub cost: Vec<(String, Cost)>,
    pub scale: Vec<ScaleRow>,
}

pub const DIRECT: &str = "direct";
pub const SOCAT: &str = "socat";
pub const PLAIN: &str = "plain 2-hop pump";
pub const XBRIDGE: &str = "xbridge tcp";
pub const SSH_TRUSTED: &str = "ssh -Y";
pub const SSH_UNTRUSTED: &str = "ssh -X";

impl Results {
    fn rate(&self, test: &str, path: &str) -> Option<f64> {
        let t = self.tests.iter().position(|x| *x == test)?;
        let p = self.paths.iter().position(|x| x == path)?;
        self.traffic[t][p].median()
    }

    fn ratio(&self, test: &str, path: &str, to: &str) -> Option<f64> {
        Some(self.rate(test, path)? / self.rate(test, to)?)
    }

    fn ready(&self, name: &str) -> Option<&ReadyRow> {
        self.ready.iter().find(|r| r.name == name)
    }

    /// Each target of the benchmark issue: name, and (met, what was measured) if measured.
    fn targets(&self) -> Vec<(String, Option<(bool, String)>)> {
        let mut out = Vec::new();
        let gap = |f: fn(&ReadyRow) -> &Stat| {
            Some(
                f(self.ready("Xephyr via guest-xwrap")?).median()?
                    - f(self.ready("Xephyr bare")?).median()?,
            )
        };
        out.push((
            "readiness signal within 15 ms of bare Xephyr's (median)".into(),
            gap(|r| &r.signalled).map(|g| (g <= 15.0, format!("{g:+.1} ms"))),
        ));
        out.push((
            "first client served within 15 ms of bare Xephyr (median)".into(),
            gap(|r| &r.served).map(|g| (g <= 15.0, format!("{g:+.1} ms"))),
        ));
        let early: Option<u32> = self
            .ready
            .iter()
            .filter(|r| r.name.contains("guest-xwrap"))
            .map(|r| r.refused_after_signal)
            .reduce(|a, b| a + b);
        out.push((
            "no early signal (guest-xwrap)".into(),
            early.map(|n| (n == 0, format!("{n} refused after the signal"))),
        ));
        for (test, what, floor) in [
            ("-putimage500", "bulk PutImage", 0.85),
            ("-getimage500", "bulk GetImage", 0.85),
            ("-prop", "round trip", 0.75),
        ] {
            out.push((
                format!("{what} ≥ {floor}× direct"),
                self.ratio(test, XBRIDGE, DIRECT)
                    .map(|r| (r >= floor, format!("×{r:.2}"))),
            ));
        }
        for (test, what) in [("-putimage500", "PutImage"), ("-getimage500", "GetImage")] {
            out.push((
                format!("bulk {what} ≥ 2× socat"),
                self.ratio(test, XBRIDGE, SOCAT)
                    .map(|r| (r >= 2.0, format!("×{r:.2} of socat"))),
            ));
        }
        let behind: Option<Vec<String>> = self
            .tests
            .iter()
            .map(|test| {
                let ours = self.rate(test, XBRIDGE)?;
                let ssh = self
                    .rate(test, SSH_TRUSTED)?
                    .max(self.rate(test, SSH_UNTRUSTED)?);
                Some((ours <= ssh).then(|| format!("{test} ×{:.2}", ours / ssh)))
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect());
        out.push((
            "ahead of OpenSSH X11 forwarding on every row".into(),
            behind.map(|b| {
                if b.is_empty() {
                    (true, "every row".into())
                } else {
                    (false, format!("behind on {}", b.join(", ")))
                }
            }),
        ));
        out.push((
            "agent < 8 MiB resident idle".into(),
            Some((
                self.idle_kib < 8.0 * 1024.0,
                format!("{:.1} MiB", self.idle_kib / 1024.0),
            )),
        ));
        out.push((
            "agent < 64 MiB with 100 connections".into(),
            (self.held >= 100).then(|| {
                (
                    self.busy_kib < 64.0 * 1024.0,
                    format!("{:.1} MiB", self.busy_kib / 1024.0),
                )
            }),
        ));
        let many = self
            .scale
            .iter()
            .filter(|s| s.path == XBRIDGE)
            .max_by_key(|s| s.clients);
        out.push((
            format!(
                "{} concurrent bridged clients all finish, byte-exact",
                many.map_or(200, |s| s.clients)
            ),
            many.map(|s| match &s.result {
                Ok(_) => (true, "all finished, every pixel checked".into()),
                Err(e) => (false, e.clone()),
            }),
        ));
        out
    }

    pub fn render(&self) -> (String, String) {
        let mut md = format!("# xbridge benchmark ({})\n\n", self.mode);
        md.push_str(
            "Medians over alternating rounds (min–max), measured side by side in one run; \
             ratios are to `direct` in the same run. `xbridge tcp` is an X client on \
             guest-xwrap's proxy display, carried over TCP loopback to host-agent (untrusted); \
             `xbridge stdio` is the same through `host-agent stdio` per connection. \
             `plain 2-hop pump` has xbridge's shape (unix → TCP → unix) with no \
             authentication: the floor for two hops.\n\n",
        );
        let mut json = Vec::<Value>::new();

        md.push_str("## Round trip and bulk (x11perf, ops/s)\n\n| test |");
        for p in &self.paths {
            md.push_str(&format!(" {p} |"));
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(self.paths.len()));
        md.push('\n');
        for (t, test) in self.tests.iter().enumerate() {
            md.push_str(&format!("| {test} |"));
            let direct = self.traffic[t][0].median();
            for (p, stat) in self.traffic[t].iter().enumerate() {
                let (Some((med, lo, hi)), Some(direct)) = (stat.summary(), direct) else {
                    md.push_str(" — |");
                    continue;
                };
                md.push_str(&format!(
                    " {med:.0} ({lo:.0}–{hi:.0}) ×{:.2} |",
                    med / direct
                ));
                json.push(
                    json!({"kind": "traffic", "test": test, "path": self.paths[p],
                    "unit": "ops/s", "median": med, "min": lo, "max": hi,
                    "ratio_to_direct": med / direct}),
                );
            }
            md.push('\n');
        }
        for (path, why) in &self.unmeasured {
            md.push_str(&format!("\n`{path}` not measured: {why}\n"));
        }
        let of_floor: Vec<String> = self
            .tests
            .iter()
            .filter_map(|t| {
                self.ratio(t, XBRIDGE, PLAIN)
                    .map(|r| format!("{t} ×{r:.2}"))
            })
            .collect();
        if !of_floor.is_empty() {
            md.push_str(&format!(
                "\n`xbridge tcp` against the plain 2-hop pump: {}.\n",
                of_floor.join(", ")
            ));
        }

        md.push_str(
            "\n## Readiness (ms from spawn)\n\n`signalled`: `-displayfd` written (SIGUSR1 goes \
             at the same moment). `served`: a client's connection setup answered.\n\n\
             | server | signalled | served | refused after the signal |\n|---|---|---|---|\n",
        );
        for r in &self.ready {
            let cell = |s: &Stat| match s.summary() {
                Some((m, lo, hi)) => format!("{m:.1} ({lo:.1}–{hi:.1})"),
                None => "—".into(),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.name,
                cell(&r.signalled),
                cell(&r.served),
                r.refused_after_signal
            ));
            json.push(json!({"kind": "readiness", "name": r.name, "unit": "ms",
                "signalled": r.signalled.summary().map(|s| s.0),
                "served": r.served.summary().map(|s| s.0),
                "runs": r.signalled.samples.len(),
                "refused_after_signal": r.refused_after_signal}));
        }

        md.push_str(&format!(
            "\n## Agent cost\n\n| measure | value |\n|---|---|\n\
             | resident memory, idle | {:.1} MiB |\n\
             | resident memory, {} open guest connections | {:.1} MiB |\n",
            self.idle_kib / 1024.0,
            self.held,
            self.busy_kib / 1024.0
        ));
        json.push(json!({"kind": "agent_rss", "idle_kib": self.idle_kib,
            "busy_kib": self.busy_kib, "connections": self.held}));
        for (who, cost) in &self.cost {
            md.push_str(&format!(
                "| {who}: CPU per GiB forwarded (bulk rows) | {:.2} s ({:.2} s for {:.2} GiB) |\n",
                cost.per_gib(),
                cost.cpu_s,
                cost.gib()
            ));
            json.push(json!({"kind": "cpu_per_gib", "process": who,
                "cpu_s": cost.cpu_s, "bytes": cost.bytes, "cpu_s_per_gib": cost.per_gib()}));
        }

        md.push_str(
            "\n## Scale (xbridge-load: concurrent clients putting and getting back 64 KiB \
             images, every pixel checked)\n\n| path | clients | round trips each | wall | \
             aggregate | vs one client |\n|---|---|---|---|---|---|\n",
        );
        for s in &self.scale {
            let one = self
                .scale
                .iter()
                .find(|o| o.path == s.path && o.clients == 1)
                .and_then(|o| o.result.as_ref().ok())
                .map(|&(secs, bytes)| mib_per_s(bytes, secs));
            match &s.result {
                Ok((secs, bytes)) => {
                    let rate = mib_per_s(*bytes, *secs);
                    let vs = one.map_or("—".into(), |o| format!("×{:.2}", rate / o));
                    md.push_str(&format!(
                        "| {} | {} | {} | {secs:.2} s | {rate:.0} MiB/s | {vs} |\n",
                        s.path, s.clients, s.rounds
                    ));
                    json.push(
                        json!({"kind": "scale", "path": s.path, "clients": s.clients,
                        "rounds": s.rounds, "seconds": secs, "mib_per_s": rate}),
                    );
                }
                Err(e) => {
                    md.push_str(&format!(
                        "| {} | {} | {} | failed: {e} | — | — |\n",
                        s.path, s.clients, s.rounds
                    ));
                    json.push(
                        json!({"kind": "scale", "path": s.path, "clients": s.clients,
                        "rounds": s.rounds, "error": e}),
                    );
                }
            }
        }

        md.push_str("\n## Targets\n\n| target | met | measured |\n|---|---|---|\n");
        for (name, result) in self.targets() {
            match result {
                Some((met, value)) => {
                    md.push_str(&format!(
                        "| {name} | {} | {value} |\n",
                        if met { "yes" } else { "**no**" }
                    ));
                    json.push(
                        json!({"kind": "target", "name": name, "met": met, "measured": value}),
                    );
                }
                None => {
                    md.push_str(&format!("| {name} | not measured | — |\n"));
                    json.push(json!({"kind": "target", "name": name, "met": null}));
                }
            }
        }
        let json = serde_json::to_string_pretty(&Value::Array(json)).expect("plain values");
        (md, json + "\n")
    }
}

/// MiB/s moved, both directions together, for `each_way` bytes put and got back.
fn mib_per_s(each_way: u64, secs: f64) -> f64 {
    2.0 * each_way as f64 / (1 << 20) as f64 / secs
}

/// The report exists and has every section, and the JSON is a list of entries of every kind
/// with finite numbers. Used by `cargo xtask test` after `bench --smoke`; judges no timing.
pub fn check_report(dir: &Path) -> anyhow::Result<()> {
    let md = std::fs::read_to_string(dir.join("report.md")).context("no report.md")?;
    for section in [
        "## Round trip and bulk",
        "## Readiness",
        "## Agent cost",
        "## Scale",
        "## Targets",
    ] {
        if !md.contains(section) {
            bail!("report.md lacks `{section}`");
        }
    }
    let text = std::fs::read_to_string(dir.join("report.json")).context("no report.json")?;
    let json: Value = serde_json::from_str(&text).context("report.json is not JSON")?;
    let entries = json.as_array().context("report.json is not a list")?;
    for kind in [
        "traffic",
        "readiness",
        "agent_rss",
        "cpu_per_gib",
        "scale",
        "target",
    ] {
        if !entries.iter().any(|e| e["kind"] == kind) {
            bail!("report.json has no `{kind}` entry");
        }
    }
    for e in entries {
        if let Some(err) = e.get("error") {
            bail!("the benchmark recorded a failure: {err}");
        }
        // serde_json writes a NaN or an infinity as null.
        if e["kind"] == "cpu_per_gib" && !e["cpu_s_per_gib"].is_f64() {
            bail!("report.json has no finite CPU per GiB: {e}");
        }
    }
    println!("xtask: the benchmark harness ran and wrote a well-formed report");
    Ok(())
}
