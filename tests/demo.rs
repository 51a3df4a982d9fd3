//! `strait demo`, strait's main job, runs end to end with nothing but the
//! binary: no failed connection, a failover measured, a report written.

mod support;

#[test]
fn the_demo_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::strait(dir.path(), "demo --duration 10s --report report").ok();
    assert!(out.stdout.contains("connections"), "{}", out.stdout);
    assert!(out.stdout.contains("(0 failed)"), "{}", out.stdout);
    let failover_line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("failover"))
        .unwrap();
    assert!(
        failover_line.contains(" ms from the cut"),
        "{failover_line}"
    );
    for file in ["report.html", "timeline.svg", "samples.csv", "gateways.log"] {
        let path = dir.path().join("report").join(file);
        assert!(
            path.metadata().is_ok_and(|m| m.len() > 0),
            "{} missing",
            path.display()
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("report/timeline.svg")).unwrap();
    assert!(
        svg.contains("served by ap-south") && svg.contains("<circle"),
        "the plot has no points"
    );
}
