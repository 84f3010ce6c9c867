//! WiSE-FT along a finished run: α 0 is the base and α 1 the tuned model, bit for bit, in the
//! weights written out and in what the monitor measures; points are cached.

mod common;

use std::path::{Path, PathBuf};

use common::looper::{screen_text, Looper};
use common::{bytes_of, load_tensors, TinyModel};
use ratatui::crossterm::event::KeyCode;
use tunescope::interpolate::Interpolation;
use tunescope::model::Architecture;
use tunescope::recipe::{EvalSpec, ProbeSpec, Recipe};
use tunescope::run::{Record, RunDir, RunState};
use tunescope::train::{run_training, TrainControl};
use tunescope::tui::interpolation::Update;
use tunescope::tui::{LoopOptions, Note};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipe(tiny: &TinyModel, out: &Path) -> Recipe {
    let assets = repo().join("assets");
    let mut recipe = Recipe::load(
        &repo().join("recipes/mlp.yaml"),
        &[
            format!("model={}", tiny.spec_str()),
            format!("data={}", assets.join("train/counting.jsonl").display()),
            "max_steps=12".into(),
            "optimizer.lr=3e-3".into(),
            "batch_size=8".into(),
            "schedule.kind=constant".into(),
            "schedule.warmup_ratio=0".into(),
        ],
    )
    .unwrap();
    recipe.output_dir = out.to_string_lossy().into_owned();
    let path = |p: &str| assets.join(p).to_string_lossy().into_owned();
    recipe.probe = Some(ProbeSpec {
        every_steps: 12,
        target: Some(path("probe/target.jsonl")),
        heldout: Some(path("probe/heldout.jsonl")),
        max_new_tokens: 4,
        max_prompts: Some(8),
        ..ProbeSpec::default()
    });
    recipe.eval = Some(EvalSpec {
        every_steps: 12,
        tasks: vec![path("tasks/counting.yaml"), path("tasks/antonyms.yaml")],
        max_items: Some(10),
    });
    recipe
}

#[test]
fn alpha_ends_reproduce_base_and_tuned_and_points_are_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 21);
    let recipe = recipe(&tiny, tmp.path());
    let run = RunDir::create(tmp.path(), "wise").unwrap();
    run.write_recipe(&recipe).unwrap();
    let outcome =
        run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
    let log = run.read_records().unwrap().records;
    let final_eval = log
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Eval(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    let final_probe = log
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Probe(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();

    let mut wise = Interpolation::open(run.path()).unwrap();
    let base = wise.score(0.0).unwrap();
    assert_eq!(base.delta_target, Some(0.0));
    assert_eq!(base.delta_heldout, Some(0.0));
    assert_eq!(base.heldout_numeric_mass_delta, Some(0.0));
    assert!(base.heldout_kl.unwrap().abs() < 1e-9, "{base:?}");

    let tuned = wise.score(1.0).unwrap();
    assert_eq!(tuned.delta_target, final_eval.delta_learning);
    assert_eq!(tuned.delta_heldout, final_eval.delta_heldout);
    let held = final_probe.heldout.unwrap();
    assert!((tuned.heldout_numeric_mass.unwrap() - held.now.numeric_mass.mean).abs() < 1e-9);
    assert!((tuned.heldout_kl.unwrap() - held.divergence.kl.mean).abs() < 1e-7);

    // A point is computed once: the cache answers the second time, without the monitor.
    let mid = wise.score(0.5).unwrap();
    assert!(wise.point_dir(0.5).join("point.json").is_file());
    let again = wise.score(0.5).unwrap();
    assert_eq!(mid, again);
    let reopened = Interpolation::open(run.path()).unwrap();
    assert_eq!(
        tunescope::interpolate::cached(reopened.run().path(), 0.5).unwrap(),
        Some(mid)
    );

    // The weights written out: α 1 equals final/, α 0 equals the base model, bit for bit.
    for (alpha, reference) in [
        (1.0, run.final_dir().join("model.safetensors")),
        (0.0, tiny.path().join("model.safetensors")),
    ] {
        let out = tmp.path().join(format!("alpha-{alpha}"));
        wise.write_model(alpha, &out).unwrap();
        let written = load_tensors(&out.join("model.safetensors"));
        let expected = load_tensors(&reference);
        assert_eq!(written.len(), expected.len());
        for (name, t) in &expected {
            assert!(
                bytes_of(&written[name]) == bytes_of(t),
                "{name} differs at α {alpha}"
            );
        }
    }
    assert!(wise.score(1.5).is_err(), "α outside [0, 1] is refused");
}

#[test]
fn an_unfinished_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 22);
    let recipe = recipe(&tiny, tmp.path());
    let run = RunDir::create(tmp.path(), "unfinished").unwrap();
    run.write_recipe(&recipe).unwrap();
    let error = Interpolation::open(run.path()).err().unwrap().to_string();
    assert!(
        error.contains("finished run") || error.contains("status"),
        "{error}"
    );
}

/// A finished run of the tiny model under `root`.
fn finished_run(tiny: &TinyModel, root: &Path) -> RunDir {
    let recipe = recipe(tiny, root);
    let run = RunDir::create(root, "wise").unwrap();
    run.write_recipe(&recipe).unwrap();
    let outcome =
        run_training(&recipe, &run, false, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
    run
}

#[test]
fn the_workbench_view_scores_alphas_on_its_worker_and_writes_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(Architecture::Llama, 23);
    let run = finished_run(&tiny, tmp.path());
    let options = LoopOptions {
        tick: std::time::Duration::from_secs(3600),
        ..LoopOptions::default()
    };
    let looper = Looper::start(tmp.path(), Some(run.path()), options);
    let scored = |looper: &Looper, alpha: f64| match looper.wait_for("a scored point", |n| {
        matches!(
            n,
            Note::Interpolation(Update::Scored(..) | Update::Failed(..))
        )
    }) {
        Note::Interpolation(Update::Scored(_, point)) => {
            assert_eq!(point.alpha, alpha);
            point
        }
        other => panic!("{other:?}"),
    };
    looper.key(KeyCode::Char('W'));
    // The two ends come first, base then tuned.
    let base = scored(&looper, 0.0);
    assert_eq!(base.delta_target, Some(0.0));
    let tuned = scored(&looper, 1.0);
    // One step towards the base, scored on Enter.
    looper.key(KeyCode::Left);
    looper.key(KeyCode::Enter);
    let near = scored(&looper, 0.9);
    // The points are the ones the engine caches: the view computed nothing of its own.
    for point in [&base, &tuned, &near] {
        let cached = tunescope::interpolate::cached(run.path(), point.alpha).unwrap();
        assert_eq!(cached.as_ref(), Some(point));
    }
    let best = tunescope::interpolate::best_alpha(&[base, near, tuned]).unwrap();
    looper.key(KeyCode::Char('w'));
    looper.key(KeyCode::Enter);
    let written = match looper.wait_for("the write", |n| {
        matches!(
            n,
            Note::Interpolation(Update::Written(..) | Update::Failed(..))
        )
    }) {
        Note::Interpolation(Update::Written(_, alpha, out)) => {
            assert_eq!(alpha, best);
            out
        }
        other => panic!("{other:?}"),
    };
    assert!(written.join("model.safetensors").is_file());
    assert!(written.starts_with(run.path()));
    let (mut app, mut terminal) = looper.stop();
    app.message = None;
    terminal
        .draw(|f| tunescope::tui::ui::draw(f, &app))
        .unwrap();
    let screen = screen_text(&terminal);
    assert!(screen.contains("WiSE-FT"), "{screen}");
    assert!(screen.contains("★"), "the best α is marked");
}
