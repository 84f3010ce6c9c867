//! Drill: `metrics.jsonl` ends in a torn line, cut at every byte of a real record. Both readers
//! skip it and count it, and a resume after it leaves a valid file with each step once.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::TinyModel;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::run::reader::RunReader;
use tunescope::run::record::{parse_line, Line};
use tunescope::run::{Record, RecordLog, RunDir, RunState};
use tunescope::train::{run_training, TrainControl, TrainEvent};

/// 24 short counting examples.
fn write_data(dir: &Path) -> PathBuf {
    let line =
        serde_json::json!({"prompt": "how many apple : apple apple", "response": "2"}).to_string();
    let path = dir.join("data.jsonl");
    std::fs::write(&path, format!("{line}\n").repeat(24)).unwrap();
    path
}

fn train_steps(log: &RecordLog) -> Vec<usize> {
    log.iter()
        .filter_map(|r| match r {
            Record::Train(m) => Some(m.step),
            _ => None,
        })
        .collect()
}

fn reader_steps(reader: &RunReader) -> Vec<usize> {
    reader
        .snapshot()
        .loss
        .iter()
        .map(|(x, _)| *x as usize)
        .collect()
}

#[test]
fn a_torn_last_line_is_skipped_counted_and_resumed_over() {
    let started = Instant::now();
    let tiny = TinyModel::new(Architecture::Qwen2, 21);
    let tmp = tempfile::tempdir().unwrap();
    let recipe = Recipe {
        name: "torn".into(),
        model: Some(tiny.spec_str()),
        data: Some(write_data(tmp.path()).to_string_lossy().into_owned()),
        max_steps: Some(6),
        batch_size: 4,
        checkpoint_every: 2,
        trainable: tunescope::select::preset("sa-proj").unwrap(),
        ..Recipe::default()
    };
    let run = RunDir::create(&tmp.path().join("runs"), "torn").unwrap();
    run.write_recipe(&recipe).unwrap();
    let control = TrainControl::default();
    let outcome = run_training(&recipe, &run, false, &control, &mut |e| {
        if matches!(e, TrainEvent::Step(m) if m.step == 3) {
            control.request_stop();
        }
    })
    .unwrap();
    assert_eq!((outcome.state, outcome.step), (RunState::Stopped, 3));

    // The file as the crashed writer left it: its last record cut at every byte.
    let whole = std::fs::read_to_string(run.metrics_path()).unwrap();
    let body = whole.strip_suffix('\n').unwrap();
    let last_start = body.rfind('\n').unwrap() + 1;
    let last = &body[last_start..];
    assert!(matches!(
        parse_line(last),
        Line::Known(Record::Stopped { step: 3 })
    ));
    let clean = RecordLog::parse(&whole);
    assert_eq!((clean.malformed, clean.torn), (0, 0));
    let mut cuts = 0;
    for cut in 1..last.len() {
        let text = &whole[..last_start + cut];
        let log = RecordLog::parse(text);
        assert_eq!(log.torn, 1, "cut at byte {cut}: {:?}", &last[..cut]);
        assert_eq!((log.malformed, log.unknown), (0, 0), "cut at byte {cut}");
        assert_eq!(
            log.records.len(),
            clean.records.len() - 1,
            "cut at byte {cut}"
        );
        assert_eq!(train_steps(&log), [1, 2, 3]);

        std::fs::write(run.metrics_path(), text).unwrap();
        let from_dir = run.read_records().unwrap();
        assert_eq!(from_dir, log, "RunDir::read_records at cut {cut}");
        let mut reader = RunReader::new(run.clone());
        reader.refresh();
        assert!(reader.torn_tail(), "cut at byte {cut}");
        assert_eq!(reader.malformed_lines(), 0);
        assert_eq!(reader_steps(&reader), [1, 2, 3]);
        assert_eq!(
            reader.snapshot().last_event.as_deref(),
            Some("checkpoint at step 3"),
            "the torn `stopped` record is not applied"
        );
        cuts += 1;
    }

    // A crash in the middle of a train record of step 3; a reader follows across the resume.
    let train_3 = whole
        .lines()
        .position(|l| matches!(parse_line(l), Line::Known(Record::Train(ref m)) if m.step == 3))
        .unwrap();
    let mut torn: String = whole
        .lines()
        .take(train_3)
        .map(|l| format!("{l}\n"))
        .collect();
    let train_line = whole.lines().nth(train_3).unwrap();
    torn.push_str(&train_line[..train_line.len() / 2]);
    std::fs::write(run.metrics_path(), &torn).unwrap();
    std::fs::remove_dir_all(run.checkpoint_dir(3)).unwrap();
    assert_eq!(run.latest_checkpoint(), Some(2));
    let mut follower = RunReader::new(run.clone());
    follower.refresh();
    assert!(follower.torn_tail());
    assert_eq!(reader_steps(&follower), [1, 2]);

    let outcome = run_training(&recipe, &run, true, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!(outcome.state, RunState::Finished);

    let text = std::fs::read_to_string(run.metrics_path()).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        assert!(
            matches!(parse_line(line), Line::Known(_)),
            "every line of the resumed file is a record: {line}"
        );
    }
    let log = run.read_records().unwrap();
    assert_eq!((log.unknown, log.malformed, log.torn), (0, 0, 0));
    assert_eq!(train_steps(&log), [1, 2, 3, 4, 5, 6]);
    follower.refresh();
    assert!(!follower.torn_tail());
    assert_eq!(follower.malformed_lines(), 0);
    assert_eq!(reader_steps(&follower), [1, 2, 3, 4, 5, 6]);

    eprintln!(
        "torn-line drill: survived {cuts} cut points of the last record and a resume over a torn \
         train record; each step once ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
}

/// A run killed before its first checkpoint (simulated: stopped at step 2, its only checkpoint
/// removed) resumes by starting over: the earlier attempt's records go, each step appears once.
#[test]
fn a_resume_without_a_checkpoint_starts_over_with_each_step_once() {
    let tiny = TinyModel::new(Architecture::Qwen2, 22);
    let tmp = tempfile::tempdir().unwrap();
    let recipe = Recipe {
        name: "restart".into(),
        model: Some(tiny.spec_str()),
        data: Some(write_data(tmp.path()).to_string_lossy().into_owned()),
        max_steps: Some(4),
        batch_size: 4,
        trainable: tunescope::select::preset("sa-proj").unwrap(),
        ..Recipe::default()
    };
    let run = RunDir::create(&tmp.path().join("runs"), "restart").unwrap();
    run.write_recipe(&recipe).unwrap();
    let control = TrainControl::default();
    let outcome = run_training(&recipe, &run, false, &control, &mut |e| {
        if matches!(e, TrainEvent::Step(m) if m.step == 2) {
            control.request_stop();
        }
    })
    .unwrap();
    assert_eq!(outcome.state, RunState::Stopped);
    std::fs::remove_dir_all(run.checkpoint_dir(2)).unwrap();
    assert_eq!(run.latest_checkpoint(), None);

    let outcome = run_training(&recipe, &run, true, &TrainControl::default(), &mut |_| {}).unwrap();
    assert_eq!((outcome.state, outcome.step), (RunState::Finished, 4));
    let log = run.read_records().unwrap();
    assert_eq!(train_steps(&log), [1, 2, 3, 4]);
    let kinds: Vec<&str> = log.iter().map(Record::kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "start").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"resume") && !kinds.contains(&"stopped"),
        "{kinds:?}"
    );
}
