//! Rendering tests of the dashboard, compare and runs panes on a `TestBackend`: content that
//! matters (text, numeric-token colour and `#` marks, signed deltas, highlights), zoom, and a
//! no-panic sweep over empty and non-finite data at many sizes.

use std::collections::BTreeMap;

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::{Frame, Terminal};

use tunescope::eval::drift::LayerDrift;
use tunescope::eval::probe::HistogramEntry;
use tunescope::eval::tasks::{TaskKind, TaskRole, TaskScore};
use tunescope::run::reader::{ProbePoint, RunSnapshot};
use tunescope::run::{RunState, Status};
use tunescope::tui::panes::compare::{render_compare, CompareRow};
use tunescope::tui::panes::dashboard::{
    dashboard_layout, render_dashboard, render_dashboard_focused, DashPanel,
};
use tunescope::tui::panes::runs::{render_runs, RunRow, NO_RUNS};
use tunescope::tui::panes::widgets;
use tunescope::tui::theme::Theme;

// ---------------------------------------------------------------------------------------------
// fixtures

fn status(state: RunState, step: usize, total: usize) -> Status {
    Status {
        state,
        pid: Some(4242),
        step,
        total_steps: total,
        recipe: "lora-attn".into(),
        model: "tiny".into(),
        started_at: "2024-05-01T12:00:00+02:00".into(),
        updated_at: "2024-05-01T12:34:56+02:00".into(),
        last_checkpoint: None,
        last_error: None,
    }
}

fn task(name: &str, role: TaskRole, score: f64) -> TaskScore {
    TaskScore {
        name: name.into(),
        role,
        kind: TaskKind::MultipleChoice,
        items: 20,
        score: Some(score),
        metrics: BTreeMap::from([("acc".to_string(), score)]),
    }
}

fn entry(id: u32, token: &str, base: f32, now: f32, numeric: bool) -> HistogramEntry {
    HistogramEntry {
        id,
        token: token.into(),
        base,
        now,
        numeric,
    }
}

/// A run at step 30 of 120: 30 loss points (last 1.4), 3 probes, a target task (+12.5) and two
/// held-out tasks (-3.0, +1.0), 2 layers of drift and a histogram with numeric tokens.
fn snapshot() -> RunSnapshot {
    let loss: Vec<(f64, f64)> = (1..=30)
        .map(|i| (i as f64, 2.0 - 0.02 * i as f64))
        .collect();
    let lr: Vec<(f64, f64)> = (1..=30)
        .map(|i| (i as f64, 2e-4 * (i as f64 / 30.0)))
        .collect();
    let probe = |step: f64, heldout: f64, target: f64, kl: f64| ProbePoint {
        step,
        heldout_mass: Some(heldout),
        heldout_base_mass: Some(0.10),
        target_mass: Some(target),
        target_base_mass: Some(0.20),
        kl: Some(kl),
        entropy: Some(1.25),
        first_token_numeric: Some(0.2),
        ..Default::default()
    };
    RunSnapshot {
        forecast: None,
        status: Some(status(RunState::Running, 30, 120)),
        loss,
        lr,
        tokens_per_s: Some(1234.0),
        elapsed: Some(60.0),
        probes: vec![
            probe(10.0, 0.10, 0.25, 0.01),
            probe(20.0, 0.12, 0.30, 0.02),
            probe(30.0, 0.15, 0.40, 0.031),
        ],
        eval_step: Some(30),
        scores: vec![
            task("trivia", TaskRole::Heldout, 67.0),
            task("arith", TaskRole::Target, 62.5),
            task("boolq", TaskRole::Heldout, 61.0),
        ],
        base_scores: vec![
            task("arith", TaskRole::Target, 50.0),
            task("trivia", TaskRole::Heldout, 70.0),
            task("boolq", TaskRole::Heldout, 60.0),
        ],
        delta_learning: Some(12.5),
        delta_heldout: Some(-1.0),
        layer_drift: vec![
            LayerDrift {
                layer: 0,
                attn: 0.5,
                mlp: 1.0,
            },
            LayerDrift {
                layer: 1,
                attn: 2.0,
                mlp: 0.25,
            },
        ],
        histogram: vec![
            entry(1, " the", 0.30, 0.20, false),
            entry(2, "7", 0.05, 0.12, true),
            entry(3, "and", 0.08, 0.06, false),
            entry(4, "Ġ3", 0.04, 0.09, true),
            entry(5, "\n", 0.06, 0.03, false),
            entry(6, "two", 0.02, 0.05, true),
        ],
        histogram_step: Some(30),
        trainable: Some(1_000),
        total_params: Some(100_000),
        guard_messages: vec![],
        last_event: Some("start at step 0".into()),
        sequence: None,
    }
}

/// Every number NaN or infinite, inconsistent progress, odd tokens.
fn nan_snapshot() -> RunSnapshot {
    let nan = f64::NAN;
    let mut bad_task = task("nan", TaskRole::Heldout, nan);
    bad_task.metrics.insert("perplexity".into(), f64::INFINITY);
    let mut ppl = task("ppl", TaskRole::Heldout, 0.0);
    ppl.score = None;
    ppl.metrics = BTreeMap::from([("perplexity".to_string(), nan)]);
    RunSnapshot {
        forecast: Some((f64::NAN, f64::INFINITY, 0)),
        status: Some(Status {
            last_error: Some("boom\nline two\u{1b}[31m".into()),
            ..status(RunState::Failed, 50, 0)
        }),
        loss: vec![
            (nan, nan),
            (1.0, f64::INFINITY),
            (2.0, nan),
            (f64::NEG_INFINITY, 3.0),
        ],
        lr: vec![(nan, nan), (1.0, f64::INFINITY)],
        tokens_per_s: Some(nan),
        elapsed: Some(f64::INFINITY),
        probes: vec![ProbePoint {
            step: nan,
            heldout_mass: Some(nan),
            heldout_base_mass: Some(f64::INFINITY),
            target_mass: Some(nan),
            target_base_mass: None,
            kl: Some(nan),
            entropy: Some(f64::NEG_INFINITY),
            first_token_numeric: Some(nan),
            heldout_answer_mass: Some((nan, f64::INFINITY)),
            heldout_shape: Some(tunescope::run::reader::ShapePoint {
                short_answer_tokens: 1,
                ends_within: (nan, f64::NEG_INFINITY),
                mean_length: (f64::INFINITY, nan),
                first_stop_prob: (nan, nan),
            }),
        }],
        eval_step: Some(usize::MAX),
        scores: vec![bad_task.clone(), ppl.clone()],
        base_scores: vec![bad_task, ppl],
        delta_learning: Some(nan),
        delta_heldout: Some(f64::INFINITY),
        layer_drift: (0..40)
            .map(|l| LayerDrift {
                layer: l,
                attn: if l % 2 == 0 { nan } else { f64::INFINITY },
                mlp: -1.0,
            })
            .collect(),
        histogram: vec![
            entry(1, "", f32::NAN, f32::INFINITY, true),
            entry(
                2,
                "\u{0}\t\r\u{7f}\u{85}日本語のトークン",
                -1.0,
                f32::NAN,
                false,
            ),
        ],
        histogram_step: Some(7),
        trainable: Some(5),
        total_params: Some(0),
        guard_messages: vec!["numeric mass\ndrift".into()],
        last_event: None,
        sequence: None,
    }
}

fn theme() -> Theme {
    Theme::dark()
}

// ---------------------------------------------------------------------------------------------
// buffer helpers

fn draw(w: u16, h: u16, f: impl FnOnce(&mut Frame)) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(f).unwrap();
    terminal.backend().buffer().clone()
}

fn row_text(buf: &Buffer, y: u16) -> String {
    (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect()
}

fn screen(buf: &Buffer) -> String {
    (0..buf.area.height)
        .map(|y| row_text(buf, y))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every (x, y) where `needle` starts, cell by cell.
fn find_all(buf: &Buffer, needle: &str) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let mut text = String::new();
            let mut cx = x;
            while text.len() < needle.len() && cx < buf.area.width {
                text.push_str(buf[(cx, y)].symbol());
                cx += 1;
            }
            if text.starts_with(needle) {
                out.push((x, y));
            }
        }
    }
    out
}

fn find(buf: &Buffer, needle: &str) -> (u16, u16) {
    *find_all(buf, needle)
        .first()
        .unwrap_or_else(|| panic!("`{needle}` not on screen:\n{}", screen(buf)))
}

fn contains(buf: &Buffer, needle: &str) -> bool {
    !find_all(buf, needle).is_empty()
}

fn dashboard(w: u16, h: u16, snap: &RunSnapshot, zoom: Option<DashPanel>) -> Buffer {
    draw(w, h, |f| {
        render_dashboard(f, f.area(), snap, "run-lora", &theme(), zoom)
    })
}

// ---------------------------------------------------------------------------------------------
// dashboard

#[test]
fn dash_panel_cycles() {
    assert_eq!(DashPanel::ALL.len(), 5);
    let mut p = DashPanel::Loss;
    for expected in [
        DashPanel::Histogram,
        DashPanel::NumericMass,
        DashPanel::Scores,
        DashPanel::LayerDrift,
        DashPanel::Loss,
    ] {
        p = p.next();
        assert_eq!(p, expected);
    }
    assert_eq!(DashPanel::Loss.prev(), DashPanel::LayerDrift);
}

#[test]
fn layout_shows_all_panels_when_large_and_hints_when_small() {
    let big = dashboard_layout(Rect::new(0, 0, 160, 48));
    assert_eq!(big.len(), 5);
    for (i, (_, a)) in big.iter().enumerate() {
        for (_, b) in &big[i + 1..] {
            assert!(!a.intersects(*b), "{a:?} overlaps {b:?}");
        }
    }
    let small = dashboard_layout(Rect::new(0, 0, 80, 24));
    let panels: Vec<DashPanel> = small.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        panels,
        vec![DashPanel::Loss, DashPanel::Histogram, DashPanel::Scores]
    );
    let buf = dashboard(80, 24, &snapshot(), None);
    assert!(contains(&buf, "z: zoom"), "{}", screen(&buf));
}

fn check_loss_panel(buf: &Buffer) {
    assert!(contains(buf, "30/120"), "{}", screen(buf));
    assert!(contains(buf, "loss 1.4000"), "{}", screen(buf));
    assert!(contains(buf, "running"));
    assert!(contains(buf, "1.2k tok/s"));
    // 60 s for 30 steps, 90 to go.
    assert!(contains(buf, "ETA 3m00s"));
    assert!(contains(buf, "25%"), "gauge label:\n{}", screen(buf));
    let (x, y) = find(buf, "running");
    assert_eq!(buf[(x, y)].fg, theme().accent);
}

fn check_histogram(buf: &Buffer) {
    let t = theme();
    assert!(contains(buf, "probe step 30"), "{}", screen(buf));
    for token in ["7", "Ġ3", "two"] {
        let (x, y) = find(buf, &format!("# {token} "));
        assert_eq!(buf[(x, y)].symbol(), "#");
        assert_eq!(buf[(x, y)].fg, t.numeric, "`#` of {token}");
        for dx in 0..token.chars().count() as u16 {
            let cell = &buf[(x + 2 + dx, y)];
            assert_eq!(cell.fg, t.numeric, "token {token} cell {dx}");
            assert!(cell.modifier.contains(ratatui::style::Modifier::BOLD));
        }
        // Both bars drawn on the token's row.
        let row = row_text(buf, y);
        assert!(row.matches('█').count() >= 1 || row.contains('▏'), "{row}");
    }
    // Non-numeric tokens: plain text, no mark; space and newline made visible.
    let (x, y) = find(buf, "  and ");
    assert_eq!(buf[(x + 2, y)].fg, t.text);
    assert_ne!(buf[(x, y)].symbol(), "#");
    assert!(contains(buf, "␣the"));
    assert!(contains(buf, "⏎"));
    // Base bars in the base colour, current bars in the now colour.
    let (_, y) = find(buf, "# 7 ");
    let colours: Vec<Color> = (0..buf.area.width)
        .filter(|&x| buf[(x, y)].symbol() == "█")
        .map(|x| buf[(x, y)].fg)
        .collect();
    assert!(
        colours.contains(&t.base) && colours.contains(&t.now),
        "{colours:?}"
    );
}

fn check_scores(buf: &Buffer) {
    let t = theme();
    let (x, y) = find(buf, "+12.5");
    assert_eq!(buf[(x, y)].fg, t.good);
    assert!(row_text(buf, y).contains("arith"));
    assert!(row_text(buf, y).contains("50.0") && row_text(buf, y).contains("62.5"));
    let (x, y) = find(buf, "-3.0");
    assert_eq!(buf[(x, y)].fg, t.bad);
    assert!(row_text(buf, y).contains("trivia"));
    assert!(contains(buf, "+1.0"));
    let (x, y) = find(buf, "Δ learning +12.5 pp");
    assert_eq!(buf[(x + 11, y)].fg, t.good);
    let (x, y) = find(buf, "Δ held-out -1.0 pp");
    assert_eq!(buf[(x + 11, y)].fg, t.bad);
}

fn check_drift(buf: &Buffer) {
    for label in ["L0 ", "L1 "] {
        let (_, y) = find(buf, label);
        let row = row_text(buf, y);
        assert!(row.contains('█'), "no drift bar for {label}: {row}");
    }
    // L1's attention (2.0) is the maximum: the longest bar. Count from the labels rightwards
    // (other panels share the rows).
    let (x0, y0) = find(buf, "L0 ");
    let (x1, y1) = find(buf, "L1 ");
    let first_bar = |x: u16, y: u16| {
        (x + 3..buf.area.width)
            .map(|cx| buf[(cx, y)].symbol())
            .take_while(|s| *s != " ")
            .filter(|s| *s == "█")
            .count()
    };
    assert!(first_bar(x1, y1) > first_bar(x0, y0));
    assert_eq!(buf[(x1 + 3, y1)].fg, theme().accent, "attention bar colour");
}

#[test]
fn dashboard_160x48_shows_every_panel() {
    let buf = dashboard(160, 48, &snapshot(), None);
    check_loss_panel(&buf);
    check_histogram(&buf);
    check_scores(&buf);
    check_drift(&buf);
    assert!(contains(&buf, "numeric mass"));
    assert!(contains(&buf, "KL 0.0310"), "{}", screen(&buf));
    assert!(contains(&buf, "15.0%"), "latest held-out mass");
    assert!(contains(&buf, "run-lora"));
    assert!(contains(&buf, "lr 2.0e-4"), "{}", screen(&buf));
}

#[test]
fn dashboard_80x24_is_usable() {
    let buf = dashboard(80, 24, &snapshot(), None);
    check_loss_panel(&buf);
    check_histogram(&buf);
    check_scores(&buf);
    // The numeric-mass summary is folded into the histogram panel.
    assert!(
        contains(&buf, "numeric mass 10.0% → 15.0%"),
        "{}",
        screen(&buf)
    );
    assert!(
        contains(&buf, "mass, drift"),
        "hint names the hidden panels"
    );
}

#[test]
fn zoom_shows_only_the_zoomed_panel() {
    let snap = snapshot();
    let titles = [
        (DashPanel::Loss, "loss · lr"),
        (DashPanel::Histogram, "token distribution"),
        (DashPanel::NumericMass, "numeric mass · held-out / target"),
        (DashPanel::Scores, "held-out scores"),
        (DashPanel::LayerDrift, "layer drift"),
    ];
    for (w, h) in [(80, 24), (160, 48)] {
        for (panel, title) in titles {
            let buf = dashboard(w, h, &snap, Some(panel));
            assert!(
                contains(&buf, title),
                "{panel:?} at {w}x{h}:\n{}",
                screen(&buf)
            );
            for (other, other_title) in titles {
                if other != panel {
                    assert!(
                        !contains(&buf, other_title),
                        "{other:?} visible when zoomed on {panel:?}"
                    );
                }
            }
            // One panel fills the area: its border spans the corners.
            assert_eq!(buf[(0, 0)].symbol(), "┌");
            assert_eq!(buf[(w - 1, h - 1)].symbol(), "┘");
        }
    }
    check_drift(&dashboard(80, 24, &snap, Some(DashPanel::LayerDrift)));
    check_histogram(&dashboard(80, 24, &snap, Some(DashPanel::Histogram)));
    check_scores(&dashboard(80, 24, &snap, Some(DashPanel::Scores)));
    let mass = dashboard(80, 24, &snap, Some(DashPanel::NumericMass));
    assert!(
        contains(&mass, "KL 0.0310") && contains(&mass, "entropy 1.250"),
        "{}",
        screen(&mass)
    );
}

/// Held-out mass rising from 0.01% to 0.04% while the target mass sits near 50%.
fn small_rise_snapshot() -> RunSnapshot {
    let probe = |step: f64, heldout: f64, target: f64| ProbePoint {
        step,
        heldout_mass: Some(heldout),
        heldout_base_mass: Some(0.0001),
        target_mass: Some(target),
        target_base_mass: Some(0.45),
        kl: Some(0.01),
        entropy: Some(1.0),
        first_token_numeric: Some(0.3),
        ..Default::default()
    };
    RunSnapshot {
        probes: vec![
            probe(0.0, 0.0001, 0.45),
            probe(10.0, 0.0002, 0.48),
            probe(20.0, 0.0003, 0.50),
            probe(30.0, 0.0004, 0.50),
        ],
        ..RunSnapshot::default()
    }
}

/// Rows of `area` holding braille cells drawn in `color`.
fn braille_rows(buf: &Buffer, area: Rect, color: Color) -> Vec<u16> {
    let mut rows: Vec<u16> = Vec::new();
    for y in area.top()..area.bottom() {
        for x in area.left()..area.right() {
            let cell = &buf[(x, y)];
            let braille = cell
                .symbol()
                .chars()
                .next()
                .is_some_and(|c| ('\u{2801}'..='\u{28ff}').contains(&c));
            if braille && cell.fg == color && !rows.contains(&y) {
                rows.push(y);
            }
        }
    }
    rows
}

#[test]
fn numeric_mass_gives_held_out_its_own_scale() {
    let snap = small_rise_snapshot();
    let now = theme().now;
    let full = dashboard(160, 48, &snap, None);
    let (_, mass_area) = dashboard_layout(Rect::new(0, 0, 160, 48))
        .into_iter()
        .find(|(p, _)| *p == DashPanel::NumericMass)
        .unwrap();
    let zoomed =
        [(80, 24), (60, 16)].map(|(w, h)| dashboard(w, h, &snap, Some(DashPanel::NumericMass)));
    let cases = [
        (&full, mass_area),
        (&zoomed[0], zoomed[0].area),
        (&zoomed[1], zoomed[1].area),
    ];
    for (buf, area) in cases {
        // The held-out line climbs through several rows instead of lying flat at zero.
        let rows = braille_rows(buf, area, now);
        assert!(rows.len() >= 3, "held-out rows {rows:?}:\n{}", screen(buf));
        // Its own axis is labelled in its own range (besides the summary line's 0.04%).
        let labels = find_all(buf, "0.04%")
            .into_iter()
            .filter(|(x, y)| area.contains((*x, *y).into()))
            .count();
        assert!(labels >= 2, "no held-out axis label:\n{}", screen(buf));
    }
    // Both charts are drawn at the large size: the target keeps its own axis near 50%.
    assert!(braille_rows(&full, mass_area, theme().numeric).len() >= 2);
    let zoomed = &zoomed[0];
    assert!(contains(zoomed, "held-out") && contains(zoomed, "target"));
    assert!(contains(zoomed, "50."), "{}", screen(zoomed));
}

#[test]
fn focused_panel_border_is_accented() {
    let t = theme();
    let buf = draw(160, 48, |f| {
        render_dashboard_focused(
            f,
            f.area(),
            &snapshot(),
            "r",
            &t,
            None,
            Some(DashPanel::Scores),
        )
    });
    let (x, y) = find(&buf, " held-out scores");
    assert_eq!(buf[(x - 1, y)].fg, t.accent);
    let (x, y) = find(&buf, " token distribution");
    assert_eq!(buf[(x - 1, y)].fg, t.border);
}

#[test]
fn dashboard_before_first_record() {
    let snap = RunSnapshot::default();
    let buf = dashboard(160, 48, &snap, None);
    assert!(contains(&buf, "waiting"), "{}", screen(&buf));
    assert!(contains(&buf, "no probe"));
    assert!(contains(&buf, "no evaluation yet"));
    assert!(contains(&buf, "no layer drift yet"));
    assert!(contains(&buf, "Δ learning – pp"));
}

#[test]
fn many_layers_are_folded_to_fit() {
    let mut snap = snapshot();
    snap.layer_drift = (0..64)
        .map(|l| LayerDrift {
            layer: l,
            attn: l as f64,
            mlp: 1.0,
        })
        .collect();
    let buf = dashboard(80, 24, &snap, Some(DashPanel::LayerDrift));
    assert!(contains(&buf, "L0-"), "{}", screen(&buf));
    assert!(
        contains(&buf, "-63"),
        "last layer covered:\n{}",
        screen(&buf)
    );
}

// ---------------------------------------------------------------------------------------------
// compare

fn compare_rows() -> Vec<CompareRow> {
    let first = CompareRow::from_snapshot("run-lora", "lora-attn", &snapshot());
    let second = CompareRow {
        run: "run-full".into(),
        recipe: "full-ft".into(),
        state: "finished".into(),
        trainable_pct: Some(100.0),
        delta_learning: Some(20.0),
        delta_heldout: Some(-8.5),
        numeric_mass_base: Some(0.10),
        numeric_mass_end: Some(0.30),
        tokens_per_s: Some(800.0),
        stages: None,
    };
    vec![first, second]
}

#[test]
fn compare_row_from_snapshot() {
    let row = CompareRow::from_snapshot("run-lora", "", &snapshot());
    assert_eq!(row.recipe, "lora-attn", "falls back to the status's recipe");
    assert_eq!(row.state, "running");
    assert!((row.trainable_pct.unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(row.delta_learning, Some(12.5));
    assert_eq!(row.delta_heldout, Some(-1.0));
    assert_eq!(row.numeric_mass_base, Some(0.10));
    assert_eq!(row.numeric_mass_end, Some(0.15));
    assert_eq!(row.tokens_per_s, Some(1234.0));
    let empty = CompareRow::from_snapshot("x", "y", &RunSnapshot::default());
    assert_eq!(empty.state, "unknown");
    assert_eq!(empty.trainable_pct, None);
    assert_eq!(empty.numeric_mass_end, None);
}

#[test]
fn compare_table_and_scatter() {
    let t = theme();
    for (w, h) in [(160, 48), (80, 24)] {
        let rows = compare_rows();
        let buf = draw(w, h, |f| render_compare(f, f.area(), &rows, 1, &t));
        let text = screen(&buf);
        assert!(
            contains(&buf, "Δ learning vs Δ held-out"),
            "{w}x{h}:\n{text}"
        );
        let (x, y) = find(&buf, "run-lora");
        let row = row_text(&buf, y);
        assert!(row.contains("lora-attn") && row.contains("1.0%"), "{row}");
        assert!(row.contains("+12.5") && row.contains("-1.0"), "{row}");
        assert!(row.contains("10.0%→15.0%"), "{row}");
        assert!(row.contains("1.2k"), "{row}");
        assert_ne!(buf[(x, y)].bg, t.selection, "first row not selected");
        let (x, y) = find(&buf, "run-full");
        let row = row_text(&buf, y);
        assert!(
            row.contains("+20.0") && row.contains("-8.5") && row.contains("100%"),
            "{row}"
        );
        assert_eq!(buf[(x, y)].bg, t.selection, "selected row highlighted");
        // Points labelled by index; the selected one by recipe too.
        assert!(contains(&buf, "●1"), "{text}");
        assert!(contains(&buf, "●2 full-ft"), "{text}");
        let (x, y) = find(&buf, "-8.5");
        assert_eq!(buf[(x, y)].fg, t.bad);
    }
}

#[test]
fn compare_empty_and_out_of_range_selection() {
    let t = theme();
    let buf = draw(80, 24, |f| render_compare(f, f.area(), &[], 3, &t));
    assert!(contains(&buf, "nothing to compare yet"));
    let rows = compare_rows();
    let buf = draw(80, 24, |f| render_compare(f, f.area(), &rows, 99, &t));
    let (x, y) = find(&buf, "run-full");
    assert_eq!(
        buf[(x, y)].bg,
        t.selection,
        "selection clamped to the last row"
    );
}

// ---------------------------------------------------------------------------------------------
// runs

fn run_rows() -> Vec<RunRow> {
    let mut finished = snapshot();
    finished.status = Some(status(RunState::Finished, 120, 120));
    let mut failed = snapshot();
    failed.status = Some(status(RunState::Failed, 3, 120));
    let mut stopped = snapshot();
    stopped.status = Some(status(RunState::Stopped, 60, 120));
    vec![
        RunRow::from_snapshot("run-a", &snapshot()),
        RunRow::from_snapshot("run-b", &finished),
        RunRow::from_snapshot("run-c", &failed),
        RunRow::from_snapshot("run-d", &stopped),
    ]
}

#[test]
fn run_row_from_snapshot() {
    let row = RunRow::from_snapshot("run-a", &snapshot());
    assert_eq!(row.state, "running");
    assert_eq!((row.step, row.total_steps), (30, 120));
    assert!((row.loss.unwrap() - 1.4).abs() < 1e-9);
    assert_eq!(row.delta_learning, Some(12.5));
    assert_eq!(row.updated_at, "2024-05-01T12:34:56+02:00");
    let empty = RunRow::from_snapshot("x", &RunSnapshot::default());
    assert_eq!(empty.state, "unknown");
    assert_eq!(empty.loss, None);
}

#[test]
fn runs_table_highlights_selection_and_colours_states() {
    let t = theme();
    for (w, h) in [(80, 24), (160, 48)] {
        let rows = run_rows();
        let buf = draw(w, h, |f| render_runs(f, f.area(), &rows, 1, &t));
        let text = screen(&buf);
        let (x, y) = find(&buf, "run-b");
        assert_eq!(buf[(x, y)].bg, t.selection, "{text}");
        assert!(contains(&buf, "▸ run-b"));
        let (x, y) = find(&buf, "run-a");
        assert_ne!(buf[(x, y)].bg, t.selection);
        assert!(row_text(&buf, y).contains("30/120"), "{text}");
        assert!(row_text(&buf, y).contains("1.4000"), "{text}");
        for (state, colour) in [
            ("running", t.accent),
            ("finished", t.good),
            ("failed", t.bad),
            ("stopped", t.warn),
        ] {
            let (x, y) = find(&buf, state);
            assert_eq!(buf[(x, y)].fg, colour, "{state}");
        }
        assert!(contains(&buf, "+12.5") && contains(&buf, "-1.0"));
        if w >= 160 {
            assert!(contains(&buf, "2024-05-01 12:34:56"), "{text}");
        }
    }
}

#[test]
fn runs_empty_state() {
    let buf = draw(80, 24, |f| render_runs(f, f.area(), &[], 0, &theme()));
    assert!(contains(&buf, NO_RUNS), "{}", screen(&buf));
}

// ---------------------------------------------------------------------------------------------
// no panics

#[test]
fn no_panic_sweep() {
    let t = theme();
    let mono = Theme::dark().monochrome();
    let snaps = [RunSnapshot::default(), nan_snapshot(), snapshot()];
    let nan = f64::NAN;
    let bad_compare = vec![
        CompareRow {
            run: "\u{1b}[2J".into(),
            trainable_pct: Some(nan),
            delta_learning: Some(f64::INFINITY),
            delta_heldout: Some(nan),
            numeric_mass_base: Some(nan),
            numeric_mass_end: Some(f64::NEG_INFINITY),
            tokens_per_s: Some(-nan),
            ..CompareRow::default()
        },
        CompareRow {
            delta_learning: Some(1e300),
            delta_heldout: Some(-1e300),
            ..CompareRow::default()
        },
        CompareRow {
            delta_learning: Some(0.0),
            delta_heldout: Some(0.0),
            ..CompareRow::default()
        },
    ];
    let bad_runs = vec![
        RunRow {
            step: 500,
            total_steps: 0,
            loss: Some(nan),
            ..RunRow::default()
        },
        RunRow {
            step: usize::MAX,
            total_steps: 1,
            loss: Some(f64::INFINITY),
            updated_at: "x".into(),
            ..RunRow::default()
        },
    ];
    let mut compare_sets: Vec<Vec<CompareRow>> = vec![Vec::new(), bad_compare];
    compare_sets.extend(
        snaps
            .iter()
            .map(|s| vec![CompareRow::from_snapshot("r", "", s)]),
    );
    let mut run_sets: Vec<Vec<RunRow>> = vec![Vec::new(), bad_runs];
    run_sets.extend(snaps.iter().map(|s| vec![RunRow::from_snapshot("r", s)]));
    let zooms = std::iter::once(None).chain(DashPanel::ALL.map(Some));
    let zooms: Vec<Option<DashPanel>> = zooms.collect();
    for (w, h) in [
        (1, 1),
        (10, 3),
        (80, 24),
        (160, 48),
        (300, 80),
        (2, 40),
        (200, 2),
        (59, 14),
        (120, 30),
    ] {
        for theme in [&t, &mono] {
            for snap in &snaps {
                for zoom in &zooms {
                    draw(w, h, |f| {
                        render_dashboard(f, f.area(), snap, "t\u{7}itle\n", theme, *zoom)
                    });
                    draw(w, h, |f| {
                        render_dashboard_focused(
                            f,
                            f.area(),
                            snap,
                            "",
                            theme,
                            *zoom,
                            Some(DashPanel::Histogram),
                        )
                    });
                }
                // Areas that do not match the frame: offset, oversized, empty.
                draw(w, h, |f| {
                    render_dashboard(f, Rect::new(w / 2, h / 2, w, h), snap, "t", theme, None)
                });
                draw(w, h, |f| {
                    render_dashboard(f, Rect::new(0, 0, 0, 0), snap, "t", theme, None)
                });
            }
            for (i, rows) in compare_sets.iter().enumerate() {
                draw(w, h, |f| render_compare(f, f.area(), rows, i, theme));
                draw(w, h, |f| {
                    render_compare(f, Rect::new(w / 3, 1, w * 2, h), rows, usize::MAX, theme)
                });
            }
            for (i, rows) in run_sets.iter().enumerate() {
                draw(w, h, |f| render_runs(f, f.area(), rows, i, theme));
                draw(w, h, |f| {
                    render_runs(f, Rect::new(w / 3, 1, w * 2, h), rows, usize::MAX, theme)
                });
            }
        }
    }
}

#[test]
fn monochrome_still_marks_numeric_tokens() {
    let mono = Theme::dark().monochrome();
    let buf = draw(160, 48, |f| {
        render_dashboard(f, f.area(), &snapshot(), "r", &mono, None)
    });
    for token in ["7", "Ġ3", "two"] {
        let (x, y) = find(&buf, &format!("# {token} "));
        assert!(buf[(x + 2, y)]
            .modifier
            .contains(ratatui::style::Modifier::BOLD));
    }
    let rows = run_rows();
    let buf = draw(80, 24, |f| render_runs(f, f.area(), &rows, 0, &mono));
    let (x, y) = find(&buf, "run-a");
    assert!(buf[(x, y)]
        .modifier
        .contains(ratatui::style::Modifier::REVERSED));
}

// ---------------------------------------------------------------------------------------------
// helpers

#[test]
fn formatting_helpers() {
    use tunescope::tui::format::*;
    use tunescope::tui::series::*;
    use widgets::*;
    assert_eq!(fmt_signed(Some(12.5), 1), "+12.5");
    assert_eq!(fmt_signed(Some(-3.0), 1), "-3.0");
    assert_eq!(fmt_signed(Some(-0.01), 1), "0.0");
    assert_eq!(fmt_signed(Some(f64::NAN), 1), MISSING);
    assert_eq!(fmt_duration(Some(185.0)), "3m05s");
    assert_eq!(fmt_duration(Some(3720.0)), "1h02m");
    assert_eq!(fmt_duration(Some(f64::INFINITY)), MISSING);
    assert_eq!(fmt_prob(Some(0.123)), "12.3%");
    assert_eq!(fmt_prob(Some(0.0042)), "0.42%");
    assert_eq!(fmt_rate(Some(1234.0)), "1.2k tok/s");
    assert_eq!(escape_token("a\nb\t", 10), "a⏎b⇥");
    assert_eq!(escape_token(" x", 10), "␣x");
    assert_eq!(escape_token("\u{1}", 10), "␁");
    assert_eq!(escape_token("", 10), "∅");
    assert_eq!(escape_token("abcdefgh", 4), "abc…");
    assert_eq!(truncate("日本語", 4), "日…");
    assert_eq!(pad("ab", 4), "ab  ");
    assert_eq!(pad_left("ab", 4), "  ab");
    assert_eq!(bar(1.0, 1.0, 2), "██");
    assert_eq!(bar(0.5, 1.0, 2), "█");
    assert_eq!(bar(0.001, 1.0, 10), "▏");
    assert_eq!(bar(f64::NAN, 1.0, 2), "");
    assert_eq!(bar(5.0, 1.0, 3), "███");
    assert_eq!(
        short_time("2024-05-01T12:34:56+02:00"),
        "2024-05-01 12:34:56"
    );
    assert_eq!(short_time("2024-05-01T12:34:56Z"), "2024-05-01 12:34:56");
    assert_eq!(short_time("x"), "x");
    assert_eq!(resample(&[1.0, 3.0, 5.0, 7.0], 2), vec![2.0, 6.0]);
    assert_eq!(bounds([f64::NAN], 0.1), [0.0, 1.0]);
    assert_eq!(bounds([2.0, 2.0], 0.1), [1.0, 3.0]);
    assert_eq!(bounds([-1e308, 1e308], 0.5), [-1e308, 1e308]);
}

/// Prints the panes at the two reference sizes: `cargo test --test tui_panes dump -- --ignored --nocapture`.
#[test]
#[ignore]
fn dump() {
    let t = theme();
    for (w, h) in [(80, 24), (160, 48)] {
        println!("{}\n", screen(&dashboard(w, h, &snapshot(), None)));
        let rows = compare_rows();
        println!(
            "{}\n",
            screen(&draw(w, h, |f| render_compare(f, f.area(), &rows, 1, &t)))
        );
        let rows = run_rows();
        println!(
            "{}\n",
            screen(&draw(w, h, |f| render_runs(f, f.area(), &rows, 1, &t)))
        );
    }
    for panel in DashPanel::ALL {
        println!("{}\n", screen(&dashboard(80, 24, &snapshot(), Some(panel))));
    }
    println!("{}\n", screen(&dashboard(160, 48, &nan_snapshot(), None)));
    println!(
        "{}\n",
        screen(&dashboard(80, 24, &RunSnapshot::default(), None))
    );
}

#[test]
fn numeric_mass_panel_shows_the_answer_class_and_answer_shape() {
    let mut snap = small_rise_snapshot();
    let last = snap.probes.last_mut().unwrap();
    last.heldout_answer_mass = Some((0.012, 0.002));
    last.heldout_shape = Some(tunescope::run::reader::ShapePoint {
        short_answer_tokens: 1,
        ends_within: (0.81, 0.0),
        mean_length: (0.4, 2.3),
        first_stop_prob: (0.77, 0.0),
    });
    let buf = dashboard(160, 48, &snap, Some(DashPanel::NumericMass));
    let text = screen(&buf);
    for needle in [
        "answer-class",
        "ends at once",
        "77.",
        "≤1 tok",
        "81.",
        "len 0.4",
        "2.3",
    ] {
        assert!(text.contains(needle), "no {needle:?}:\n{text}");
    }
    // The forgetting forecast, when the trainer made one.
    let mut with_forecast = snap.clone();
    with_forecast.forecast = Some((-12.3, 1.7, 12));
    let buf = dashboard(160, 48, &with_forecast, Some(DashPanel::NumericMass));
    assert!(
        contains(
            &buf,
            "forecast final Δ held-out -12.3 ± 1.7 pp (from 12 runs)"
        ),
        "{}",
        screen(&buf)
    );
    // Runs recorded before answer shapes were probed show no such line.
    let plain = dashboard(
        160,
        48,
        &small_rise_snapshot(),
        Some(DashPanel::NumericMass),
    );
    assert!(!contains(&plain, "ends at once"));
}
