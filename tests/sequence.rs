//! Sequences of fine-tuning stages on a tiny seeded model: three stages end to end (each from
//! the previous stage's final weights, checked bit for bit), the scores after every stage in the
//! table, named errors for invalid sequence files with nothing created, and a resumed
//! interruption giving the same final weights.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{load_tensors, TinyModel};
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::RunDir;
use tunescope::sequence::{
    run_sequence, stage_table, SequenceEvent, SequenceOutcome, SequenceSpec, StageState,
};
use tunescope::train::{TrainControl, TrainEvent};

/// Writes `name.jsonl` (training data whose answers are `answer(i)`).
fn write_data(dir: &Path, name: &str, answer: impl Fn(usize) -> String) -> PathBuf {
    let lines: String = (1..=16)
        .map(|i| {
            let prompt = format!("{name} question {i} ?");
            serde_json::json!({"prompt": prompt, "response": answer(i)}).to_string() + "\n"
        })
        .collect();
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, lines).unwrap();
    path
}

/// A multiple-choice task `name` of `role` with 6 items.
fn write_task(dir: &Path, name: &str, role: &str) -> PathBuf {
    let items: String = (0..6)
        .map(|i| {
            serde_json::json!({
                "prompt": format!("{name} item {i} ?"),
                "choices": ["red", "blue", "green"],
                "answer": i % 3,
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join(format!("{name}.jsonl")), items).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}\nrole: {role}\ntype: multiple_choice\ndata: {name}.jsonl\nchat: true\n"
        ),
    )
    .unwrap();
    path
}

/// A recipe training `kinds` for 4 steps, evaluated at the start and the end.
fn write_recipe(dir: &Path, name: &str, model: &str, kinds: &[&str]) -> PathBuf {
    let recipe = Recipe {
        name: name.into(),
        model: Some(model.into()),
        data: None,
        max_steps: Some(4),
        batch_size: 4,
        optimizer: tunescope::recipe::OptimizerSpec {
            lr: 1e-2,
            ..Default::default()
        },
        trainable: tunescope::select::TrainableSpec {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        },
        output_dir: dir.join("runs").to_string_lossy().into_owned(),
        ..Recipe::default()
    };
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, recipe.to_yaml().unwrap()).unwrap();
    path
}

/// Everything a three-stage sequence needs, in one temporary directory.
struct Fixture {
    _tiny: TinyModel,
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl Fixture {
    /// Stage 1 trains the MLP, stages 2 and 3 the attention projections.
    fn new() -> Self {
        let tiny = TinyModel::new(Architecture::Llama, 7);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_recipe(d, "mlp", &tiny.spec_str(), &["mlp"]);
        write_recipe(d, "attn", &tiny.spec_str(), &["q", "k", "v", "o"]);
        for (name, role) in [
            ("keep", "heldout"),
            ("ta", "target"),
            ("tb", "target"),
            ("tc", "target"),
        ] {
            write_task(d, name, role);
        }
        write_data(d, "da", |i| (i % 3).to_string());
        write_data(d, "db", |i| ["yes", "no"][i % 2].into());
        write_data(d, "dc", |_| "blue".into());
        let p = |name: &str| d.join(name).display().to_string();
        let text = format!(
            "name: tiny-three\nheldout: [{keep}]\nstages:\n\
             - {{name: a, recipe: {mlp}, data: {da}, target: {ta}}}\n\
             - {{name: b, recipe: {attn}, data: {db}, target: {tb}}}\n\
             - {{name: c, recipe: {attn}, data: {dc}, target: {tc}}}\n",
            keep = p("keep.yaml"),
            mlp = p("mlp.yaml"),
            attn = p("attn.yaml"),
            da = p("da.jsonl"),
            db = p("db.jsonl"),
            dc = p("dc.jsonl"),
            ta = p("ta.yaml"),
            tb = p("tb.yaml"),
            tc = p("tc.yaml"),
        );
        let file = d.join("seq.yaml");
        std::fs::write(&file, text).unwrap();
        Self {
            _tiny: tiny,
            dir,
            file,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(
        &self,
        out: &str,
        control: &TrainControl,
        on_event: &mut dyn FnMut(&SequenceEvent),
    ) -> SequenceOutcome {
        let plan = SequenceSpec::load(&self.file)
            .unwrap()
            .plan(&self.file, &[])
            .unwrap();
        run_sequence(&plan, &self.path(out), control, on_event).unwrap()
    }
}

fn final_tensors(stage_dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    load_tensors(&stage_dir.join("final/model.safetensors"))
}

fn bytes(t: &candle_core::Tensor) -> Vec<u8> {
    common::bytes_of(&t.to_dtype(candle_core::DType::F32).unwrap())
}

#[test]
fn three_stages_chain_weights_and_score_after_each() {
    let fx = Fixture::new();
    let outcome = fx.run("seq", &TrainControl::default(), &mut |_| {});
    assert!(outcome.finished);
    let seq = fx.path("seq");
    let record = &outcome.record;
    assert!(record
        .stages
        .iter()
        .all(|s| s.state == StageState::Finished));
    assert_eq!(
        record.scores.iter().map(|s| s.after).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    // The held-out task and every stage's target, before and after each stage.
    for entry in &record.scores {
        let names: Vec<&str> = entry.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["keep", "ta", "tb", "tc"], "after {}", entry.after);
        assert!(
            entry.tasks.iter().all(|t| t.score.is_some()),
            "after {}",
            entry.after
        );
    }

    // Each stage's recipe starts from the previous stage's final/.
    let stage = |k: usize| seq.join(&record.stages[k].run_dir);
    for k in 1..3 {
        let recipe = RunDir::open(&stage(k)).unwrap().read_recipe().unwrap();
        assert_eq!(
            recipe.model.as_deref(),
            Some(stage(k - 1).join("final").to_str().unwrap())
        );
    }
    // Stage 1 moved the MLP; stage 2 trained attention only, so its MLP is stage 1's, bit for bit.
    let base = load_tensors(&fx._tiny.path().join("model.safetensors"));
    let (one, two) = (final_tensors(&stage(0)), final_tensors(&stage(1)));
    let mlp = "model.layers.0.mlp.up_proj.weight";
    let attn = "model.layers.0.self_attn.q_proj.weight";
    assert_ne!(
        bytes(&one[mlp]),
        bytes(&base[mlp]),
        "stage 1 trained the MLP"
    );
    assert_eq!(
        bytes(&two[mlp]),
        bytes(&one[mlp]),
        "stage 2 started from stage 1's final"
    );
    assert_eq!(bytes(&one[attn]), bytes(&base[attn]));
    assert_ne!(
        bytes(&two[attn]),
        bytes(&one[attn]),
        "stage 2 trained attention"
    );

    // The table holds the recorded scores, and they are what the stage's final model scores.
    let table = stage_table(record);
    assert_eq!(table.target_tasks, ["ta", "tb", "tc"]);
    assert_eq!(table.heldout_tasks, ["keep"]);
    assert_eq!(table.rows.len(), 4);
    let plan = SequenceSpec::load(&fx.file)
        .unwrap()
        .plan(&fx.file, &[])
        .unwrap();
    let recipe = &plan.stages[0].recipe;
    let fresh = tunescope::sequence::runner::score_tasks(
        &stage(1).join("final").to_string_lossy(),
        &plan.tasks,
        None,
        recipe,
    )
    .unwrap();
    let row = &table.rows[2];
    assert_eq!(row.label, "b");
    let keep = fresh.iter().find(|t| t.name == "keep").unwrap().score;
    assert_eq!(row.heldout_mean, keep);
    for cell in &row.targets {
        let score = fresh.iter().find(|t| t.name == cell.task).unwrap().score;
        assert_eq!(cell.score, score, "{}", cell.task);
        let base = table.rows[0]
            .targets
            .iter()
            .find(|c| c.task == cell.task)
            .unwrap();
        assert_eq!(cell.delta, Some(score.unwrap() - base.score.unwrap()));
    }
    assert_eq!(
        row.heldout_delta,
        Some(keep.unwrap() - table.rows[0].heldout_mean.unwrap())
    );

    // `sequence --table` reads the same table from the directory.
    let out = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .args(["sequence", "--json", "--table"])
        .arg(&seq)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: tunescope::sequence::StageTable = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, table);

    // Stage runs are listed beside the runs of the folder.
    let listed = tunescope::run::list_runs(fx.dir.path());
    assert_eq!(listed.len(), 3);
}

#[test]
fn an_interrupted_stage_resumes_to_the_same_final_weights() {
    let fx = Fixture::new();
    let straight = fx.run("straight", &TrainControl::default(), &mut |_| {});
    assert!(straight.finished);

    // Stop stage 2 after its second step (the trainer checkpoints, then stops).
    let control = TrainControl::default();
    let stopper = control.clone();
    let first = fx.run("resumed", &control, &mut |event| {
        if let SequenceEvent::Train {
            index: 2,
            event: TrainEvent::Step(m),
        } = event
        {
            if m.step == 2 {
                stopper.request_stop();
            }
        }
    });
    assert!(!first.finished);
    let states: Vec<StageState> = first.record.stages.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            StageState::Finished,
            StageState::Stopped,
            StageState::Pending
        ]
    );
    assert_eq!(first.record.scores.len(), 2, "base and stage 1 scored");

    let mut events = Vec::new();
    let second = fx.run("resumed", &TrainControl::default(), &mut |e| {
        if !matches!(e, SequenceEvent::Train { .. }) {
            events.push(format!("{e:?}"));
        }
    });
    assert!(second.finished);
    assert!(
        events[0].starts_with("StageSkipped { index: 1"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("StageStarted { index: 2") && e.contains("resume: true")),
        "{events:?}"
    );
    for k in 0..3 {
        let a = final_tensors(&fx.path("straight").join(&straight.record.stages[k].run_dir));
        let b = final_tensors(&fx.path("resumed").join(&second.record.stages[k].run_dir));
        for (name, t) in &a {
            assert_eq!(bytes(t), bytes(&b[name]), "stage {} {name}", k + 1);
        }
    }
    let scores = |o: &SequenceOutcome| -> Vec<Vec<Option<f64>>> {
        o.record
            .scores
            .iter()
            .map(|s| s.tasks.iter().map(|t| t.score).collect())
            .collect()
    };
    assert_eq!(scores(&straight), scores(&second));

    // Running the finished sequence again trains nothing; another sequence file is refused.
    let again = fx.run("resumed", &TrainControl::default(), &mut |e| {
        assert!(matches!(e, SequenceEvent::StageSkipped { .. }), "{e:?}");
    });
    assert!(again.finished);
    let text = std::fs::read_to_string(&fx.file)
        .unwrap()
        .replace("name: c,", "name: c2,");
    std::fs::write(&fx.file, text).unwrap();
    let plan = SequenceSpec::load(&fx.file)
        .unwrap()
        .plan(&fx.file, &[])
        .unwrap();
    let err = run_sequence(
        &plan,
        &fx.path("resumed"),
        &TrainControl::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("the sequence file changed"),
        "{err:#}"
    );
}

/// Runs `tunescope sequence` on `text` and returns its stderr; asserts it failed and created
/// nothing.
fn refused(fx: &Fixture, text: &str) -> String {
    let file = fx.path("bad.yaml");
    std::fs::write(&file, text).unwrap();
    let out_dir = fx.path("out");
    let out = Command::new(env!("CARGO_BIN_EXE_tunescope"))
        .arg("sequence")
        .arg(&file)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(!out_dir.exists(), "nothing is created: {stderr}");
    assert!(!fx.path("runs").exists(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file: {stderr}"
    );
    stderr
}

#[test]
fn invalid_sequence_files_are_refused_with_named_errors() {
    let fx = Fixture::new();
    let good = std::fs::read_to_string(&fx.file).unwrap();
    let p = |name: &str| fx.path(name).display().to_string();

    let e = refused(&fx, &good.replace("recipe:", "recipes:"));
    assert!(
        e.contains("unknown field `recipes`") && e.contains("did you mean `recipe`"),
        "{e}"
    );

    let e = refused(&fx, &good.replace(&p("db.jsonl"), &p("missing.jsonl")));
    assert!(
        e.contains("stage 2 (`b`): key `data`") && e.contains("missing.jsonl"),
        "{e}"
    );

    let e = refused(&fx, &good.replace(&p("tc.yaml"), &p("keep.yaml")));
    assert!(
        e.contains("stage 3 (`c`): key `target`") && e.contains("role: heldout"),
        "{e}"
    );

    let e = refused(&fx, &good.replace(&p("attn.yaml"), &p("nope.yaml")));
    assert!(
        e.contains("stage 2 (`b`)") && e.contains("key `recipe`"),
        "{e}"
    );

    let e = refused(&fx, &good.replace("name: c,", "name: a,"));
    assert!(e.contains("stage 3 (`a`): key `name`"), "{e}");

    let e = refused(
        &fx,
        &good.replace(&format!("heldout: [{}]", p("keep.yaml")), "heldout: []"),
    );
    assert!(e.contains("key `heldout`"), "{e}");

    let e = refused(
        &fx,
        &good.replace("name: b,", "name: b, set: ['trainable.kinds=[nothing]'],"),
    );
    assert!(e.contains("stage 2 (`b`)") && e.contains("nothing"), "{e}");

    let e = refused(&fx, "name: x\nheldout: []\nstages: []\n");
    assert!(e.contains("key `stages`"), "{e}");
}

/// Text of every row of a rendered buffer.
fn screen(buf: &ratatui::buffer::Buffer) -> String {
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn draw(w: u16, h: u16, f: impl FnOnce(&mut ratatui::Frame)) -> String {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
    terminal.draw(f).unwrap();
    screen(terminal.backend().buffer())
}

#[test]
fn stage_runs_show_their_sequence_in_the_views() {
    use tunescope::run::reader::RunReader;
    use tunescope::tui::panes::compare::{render_compare, CompareRow};
    use tunescope::tui::panes::dashboard::LossView;
    use tunescope::tui::panes::stages::render_stage_table;
    use tunescope::tui::theme::Theme;

    let fx = Fixture::new();
    let outcome = fx.run("seq", &TrainControl::default(), &mut |_| {});
    let seq = fx.path("seq");
    let third = seq.join(&outcome.record.stages[2].run_dir);

    // Listed as `<sequence dir>/<k>-<stage>`.
    let names: Vec<String> = tunescope::run::list_runs(fx.dir.path())
        .iter()
        .map(|r| tunescope::run::sequence::display_name(r.path()))
        .collect();
    assert_eq!(names, ["seq/3-c", "seq/2-b", "seq/1-a"]);

    // The third stage's snapshot knows its place: stages start at steps 0, 4 and 8 (4 steps
    // each), and the earlier stages' losses are those of their own logs, shifted.
    let mut reader = RunReader::new(RunDir::open(&third).unwrap());
    reader.refresh();
    let snap = reader.snapshot();
    let view = snap.sequence.as_ref().expect("a stage of a sequence");
    assert_eq!(view.stage, 3);
    let starts: Vec<(f64, &str)> = view
        .boundaries
        .iter()
        .map(|(x, l)| (*x, l.as_str()))
        .collect();
    assert_eq!(starts, [(0.0, "1 a"), (4.0, "2 b"), (8.0, "3 c")]);
    let losses = |k: usize| -> Vec<f64> {
        RunDir::open(&seq.join(&outcome.record.stages[k].run_dir))
            .unwrap()
            .read_records()
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                tunescope::run::Record::Train(m) => Some(m.loss),
                _ => None,
            })
            .collect()
    };
    let earlier: Vec<f64> = losses(0).into_iter().chain(losses(1)).collect();
    assert_eq!(
        view.earlier_loss.iter().map(|p| p.1).collect::<Vec<_>>(),
        earlier
    );
    assert_eq!(
        view.earlier_loss.iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=8).map(f64::from).collect::<Vec<_>>()
    );

    // The dashboard's loss panel names the stages; Compare shows the per-stage table with the
    // recorded numbers in place of the scatter.
    let theme = Theme::dark();
    let loss = draw(100, 20, |f| LossView::new(snap, &theme).render(f, f.area()));
    assert!(
        loss.contains("stage 3/3 of tiny-three: │1 a │2 b │3 c"),
        "{loss}"
    );
    let row = CompareRow::from_snapshot("seq/3-c", "", snap);
    let (stage, table) = row.stages.clone().expect("stage table");
    assert_eq!((stage, &table), (3, &stage_table(&outcome.record)));
    let pane = draw(100, 12, |f| {
        render_stage_table(f, f.area(), &table, 3, &theme)
    });
    assert!(pane.contains("stages of tiny-three"), "{pane}");
    for r in &table.rows {
        let label = if r.after == 0 {
            "base".to_string()
        } else {
            format!("{} {}", r.after, r.label)
        };
        let line = pane
            .lines()
            .find(|l| l.contains(&label))
            .unwrap_or_else(|| panic!("{label}:\n{pane}"));
        assert!(
            line.contains(&format!("{:.1}", r.heldout_mean.unwrap())),
            "{line}"
        );
    }
    let compare = draw(160, 30, |f| render_compare(f, f.area(), &[row], 0, &theme));
    assert!(compare.contains("stages of tiny-three"), "{compare}");
    assert!(!compare.contains("Δ learning vs Δ held-out"), "{compare}");
}
