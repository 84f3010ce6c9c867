//! Drill: the workbench draws every tab (with help, a dialog and a status message on top) at a
//! seeded sample of terminal sizes from 20×6 to 300×100, the extremes included, on a run whose
//! records and histogram hold very long, non-UTF-8 (decoded lossily), wide and control-character
//! texts. No draw may panic.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::TinyModel;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::json;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::RunDir;
use tunescope::select::preset;
use tunescope::tui::app::{App, Confirmed, Dialog, InputPurpose, Level, Tab};
use tunescope::tui::panes::dashboard::DashPanel;
use tunescope::tui::theme::Theme;
use tunescope::tui::ui::draw;

/// Seeded splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u16, hi: u16) -> u16 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u16
    }
}

/// Texts that break naive width arithmetic: long, lossily decoded bytes, wide, combining,
/// zero-width, right-to-left, control characters.
fn odd_texts() -> Vec<String> {
    let lossy =
        String::from_utf8_lossy(b"\xff\xfe tok\xc3\x28en \xe2\x82 \xf0\x9f\x98").into_owned();
    vec![
        "Ġ".repeat(5000),
        lossy.repeat(300),
        "日本語のトークン".repeat(400),
        "e\u{301}\u{301}\u{301}".repeat(500),
        "\u{200b}\u{200d}\u{feff}".repeat(200),
        "مرحبا بالعالم".repeat(100),
        "\u{0}\t\r\n\u{7}\u{1b}[31m\u{7f}\u{85}".repeat(50),
        "🧑‍🔬🏳️‍🌈".repeat(300),
        String::new(),
    ]
}

/// A run directory holding the version-0 fixture records with odd task names, odd guard reasons
/// (one with raw invalid UTF-8 bytes in metrics.jsonl) and a histogram of odd tokens.
fn write_run(root: &Path, recipe: &Recipe) -> PathBuf {
    let run = RunDir::create(root, &recipe.name).unwrap();
    run.write_recipe(recipe).unwrap();
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics-v0/train.jsonl");
    let odd = odd_texts();
    let name = |i: usize| serde_json::to_string(&odd[i % odd.len()]).unwrap();
    let mut text = std::fs::read_to_string(fixture)
        .unwrap()
        .replace("\"counting\"", &name(0))
        .replace("\"antonyms\"", &name(2));
    let mut bytes = Vec::new();
    for (i, reason) in odd.iter().enumerate() {
        let line = json!({"kind": "guard", "action": "warn", "reason": reason, "step": i});
        text.push_str(&format!("{line}\n"));
    }
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(b"{\"kind\":\"guard\",\"action\":\"stop\",\"reason\":\"raw \xff\xfe\xc3 bytes\",\"step\":6}\n");
    std::fs::write(run.metrics_path(), bytes).unwrap();

    let histogram: Vec<_> = odd
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": i, "token": t, "base": 0.5 / (i + 1) as f32, "now": 0.1 * i as f32, "numeric": i % 2 == 0})
        })
        .collect();
    std::fs::create_dir_all(run.path().join("probe")).unwrap();
    for step in [0, 3, 6] {
        std::fs::write(
            run.path().join("probe").join(format!("step-{step}.json")),
            json!({"heldout": {"histogram": histogram}}).to_string(),
        )
        .unwrap();
    }
    run.path().to_path_buf()
}

#[test]
fn every_tab_draws_at_every_size_from_20x6_to_300x100() {
    let started = Instant::now();
    let tiny = TinyModel::new(Architecture::Qwen2, 29);
    let odd = odd_texts();
    let recipe = Recipe {
        name: format!("drill-{}", odd[2]),
        description: Some(odd[1].clone()),
        model: Some(tiny.spec_str()),
        data: Some(odd[0].clone()),
        trainable: preset("sa-proj").unwrap(),
        output_dir: tiny.path().join("runs").to_string_lossy().into_owned(),
        ..Recipe::default()
    };
    let run_dir = write_run(&tiny.path().join("runs"), &recipe);
    let themes = vec![Theme::dark(), Theme::dark().monochrome()];
    let mut app = App::new(recipe, None, themes, 0);
    app.attach(&run_dir).unwrap();
    app.refresh();
    let snapshot = app.attached.as_ref().unwrap().snapshot();
    assert!(
        snapshot.histogram.len() == odd.len() && snapshot.guard_messages.len() > odd.len(),
        "the odd texts reached the dashboard: {} tokens, {} guard messages",
        snapshot.histogram.len(),
        snapshot.guard_messages.len()
    );
    assert!(
        snapshot
            .guard_messages
            .iter()
            .any(|m| m.contains('\u{fffd}')),
        "raw bytes are decoded lossily"
    );
    assert_eq!(app.runs.len(), 1, "the Runs tab lists the run");

    // The extremes, then a seeded sample.
    let mut sizes = vec![(20, 6), (300, 100), (20, 100), (300, 6), (21, 7), (299, 99)];
    let mut rng = Rng(0x0074_7569);
    while sizes.len() < 150 {
        sizes.push((rng.range(20, 300), rng.range(6, 100)));
    }
    let overlays: Vec<(bool, Option<Dialog>)> = vec![
        (false, None),
        (true, None),
        (
            false,
            Some(Dialog::Confirm {
                message: odd[1].clone(),
                yes: Confirmed::Quit,
            }),
        ),
        (
            false,
            Some(Dialog::Input {
                title: odd[3].clone(),
                text: odd[0].clone(),
                purpose: InputPurpose::SaveAs,
                error: Some(odd[6].clone()),
            }),
        ),
        (
            false,
            Some(Dialog::Picker {
                title: odd[7].clone(),
                items: odd.iter().map(PathBuf::from).collect(),
                selected: usize::MAX,
            }),
        ),
    ];
    // The interpolation view over the Dashboard, with points of every odd kind.
    let (mut view, _worker) = tunescope::tui::interpolation::InterpolationView::open(&run_dir);
    for (i, value) in [0.0, f64::NAN, f64::INFINITY, -1e300, 1e-300, 100.0]
        .iter()
        .enumerate()
    {
        view.points.insert(
            i,
            tunescope::interpolate::AlphaPoint {
                alpha: i as f64 / 10.0,
                delta_target: Some(*value),
                delta_heldout: Some(-value),
                heldout_numeric_mass: (i % 2 == 0).then_some(*value),
                heldout_numeric_mass_delta: None,
                target_numeric_mass: None,
                heldout_kl: Some(*value),
                seconds: *value,
            },
        );
    }
    view.pending.insert(7);
    view.error = Some(odd[5].clone());
    let views: Vec<(Tab, bool)> = Tab::ALL
        .iter()
        .map(|t| (*t, false))
        .chain([(Tab::Dashboard, true)])
        .collect();
    let mut draws = 0usize;
    let mut panics = Vec::new();
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        for &(tab, interpolating) in &views {
            for (j, (help, dialog)) in overlays.iter().enumerate() {
                app.tab = tab;
                app.interpolation = interpolating.then(|| view.clone());
                app.help = *help;
                app.dialog = dialog.clone();
                app.theme_index = i + j;
                app.message = Some((odd[(i + j) % odd.len()].clone(), Level::Error));
                app.dash_zoom = DashPanel::ALL.get((i + j) % 6).copied();
                app.field = i * 7 + j;
                app.run_cursor = i + j;
                app.compare_cursor = usize::MAX - j;
                let result = catch_unwind(AssertUnwindSafe(|| {
                    terminal
                        .resize(ratatui::layout::Rect::new(0, 0, w, h))
                        .unwrap();
                    terminal.draw(|f| draw(f, &app)).unwrap();
                }));
                draws += 1;
                if result.is_err() {
                    panics.push(format!(
                        "{w}x{h} tab {tab:?} interpolation {interpolating} help {help} dialog {}",
                        dialog.is_some()
                    ));
                    terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
                }
            }
        }
    }
    eprintln!(
        "tui drill: {} sizes from 20x6 to 300x100, {draws} draws of {} tabs (and the \
         interpolation view) with overlays, {} panics ({:.1}s)",
        sizes.len(),
        Tab::ALL.len(),
        panics.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(panics.is_empty(), "draws that panicked: {panics:#?}");
}
