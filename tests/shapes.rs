//! The coloured-shapes picture world: deterministic from the seed, answers agree with the drawn
//! pixels, and its training data trains a tiny LLaVA end to end.

use std::collections::BTreeMap;
use std::path::Path;

use tunescope::world::shapes::{Colour, Shape, ShapesWorld, SCENE_SIZE};

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_scenes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    ShapesWorld::new(3).write(a.path()).unwrap();
    ShapesWorld::new(3).write(b.path()).unwrap();
    ShapesWorld::new(4).write(c.path()).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa, fb);
    assert_eq!(fa.keys().collect::<Vec<_>>(), fc.keys().collect::<Vec<_>>());
    assert_ne!(fa["train/counting.jsonl"], fc["train/counting.jsonl"]);
    for name in [
        "train/counting.jsonl",
        "tasks/counting.jsonl",
        "tasks/counting.yaml",
        "tasks/colour.jsonl",
        "tasks/shape.yaml",
        "probe/target.jsonl",
        "probe/heldout.jsonl",
    ] {
        assert!(fa.contains_key(name), "{name} missing");
    }
    // Every record's image exists, relative to its JSONL file.
    for (name, bytes) in &fa {
        if !name.ends_with(".jsonl") {
            continue;
        }
        for line in String::from_utf8_lossy(bytes).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let image = a
                .path()
                .join(name)
                .parent()
                .unwrap()
                .join(v["image"].as_str().unwrap());
            assert!(image.is_file(), "{name}: {}", image.display());
            assert!(v["prompt"].as_str().unwrap().starts_with("<image>\n"));
        }
    }
    // Train and test scenes differ.
    let world = ShapesWorld::new(3);
    let train: Vec<_> = world
        .scenes()
        .filter(|(f, _, _)| f.starts_with("train/"))
        .map(|(_, s, _)| s.clone())
        .collect();
    let test_repeats = world
        .scenes()
        .filter(|(f, _, _)| f.starts_with("tasks/counting"))
        .filter(|(_, s, _)| train.contains(s))
        .count();
    assert!(
        test_repeats <= 1,
        "{test_repeats} test scenes repeat a training scene"
    );
}

/// Connected components of exactly `rgb`, with their pixel counts.
fn components(img: &image::RgbImage, rgb: [u8; 3]) -> Vec<usize> {
    let (w, h) = img.dimensions();
    let mut seen = vec![false; (w * h) as usize];
    let mut sizes = Vec::new();
    for start in 0..w * h {
        let (x, y) = (start % w, start / w);
        if seen[start as usize] || img.get_pixel(x, y).0 != rgb {
            continue;
        }
        let mut stack = vec![(x, y)];
        seen[start as usize] = true;
        let mut size = 0;
        while let Some((x, y)) = stack.pop() {
            size += 1;
            for (dx, dy) in [(-1i32, 0i32), (1, 0), (0, -1), (0, 1)] {
                let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                if nx < 0 || ny < 0 || nx >= w as i32 || ny >= h as i32 {
                    continue;
                }
                let i = (ny as u32 * w + nx as u32) as usize;
                if !seen[i] && img.get_pixel(nx as u32, ny as u32).0 == rgb {
                    seen[i] = true;
                    stack.push((nx as u32, ny as u32));
                }
            }
        }
        sizes.push(size);
    }
    sizes
}

/// Pixel area of one drawn shape (radius 6).
fn area(shape: Shape) -> usize {
    let r = 6i32;
    (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| match shape {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            Shape::Square => dx.abs() < r && dy.abs() < r,
            Shape::Triangle => 2 * dx.abs() <= dy + r,
        })
        .count()
}

#[test]
fn answers_agree_with_the_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let world = ShapesWorld::new(7);
    world.write(dir.path()).unwrap();
    let areas: Vec<usize> = Shape::ALL.iter().map(|s| area(*s)).collect();
    assert!(
        areas[0] != areas[1] && areas[1] != areas[2] && areas[0] != areas[2],
        "{areas:?}"
    );
    let mut checked = 0;
    for (file, scene, record) in world.scenes() {
        let path = dir
            .path()
            .join(file)
            .parent()
            .unwrap()
            .join(record["image"].as_str().unwrap());
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (SCENE_SIZE, SCENE_SIZE));
        // Each object is one component of its colour, of its shape's area.
        for colour in Colour::ALL {
            let mut found = components(&img, colour.rgb());
            let mut expected: Vec<usize> = scene
                .objects
                .iter()
                .filter(|o| o.colour == colour)
                .map(|o| area(o.shape))
                .collect();
            found.sort_unstable();
            expected.sort_unstable();
            assert_eq!(found, expected, "{}: {colour:?}", path.display());
        }
        let prompt = record["prompt"].as_str().unwrap();
        let words: Vec<&str> = prompt.split_whitespace().collect();
        let colour_of = |w: &str| Colour::ALL.into_iter().find(|c| c.name() == w);
        let shape_of = |w: &str| {
            Shape::ALL
                .into_iter()
                .find(|s| s.name() == w || s.plural() == w)
        };
        if prompt.contains("how many") {
            let (c, s) = (colour_of(words[3]).unwrap(), shape_of(words[4]).unwrap());
            let answer = record.get("response").or_else(|| record.get("answer"));
            if let Some(answer) = answer {
                assert_eq!(
                    answer.as_str().unwrap(),
                    scene.count(c, s).to_string(),
                    "{prompt}"
                );
            }
        } else if prompt.contains("what colour is the") {
            let s = shape_of(words[5]).unwrap();
            let target: Vec<_> = scene.objects.iter().filter(|o| o.shape == s).collect();
            assert_eq!(target.len(), 1, "{prompt}");
            if let Some(answer) = record.get("answer") {
                let choice = &record["choices"][answer.as_u64().unwrap() as usize];
                assert_eq!(choice.as_str().unwrap(), target[0].colour.name());
            }
        } else {
            let c = colour_of(words[5]).unwrap();
            let target: Vec<_> = scene.objects.iter().filter(|o| o.colour == c).collect();
            assert_eq!(target.len(), 1, "{prompt}");
            if let Some(answer) = record.get("answer") {
                let choice = &record["choices"][answer.as_u64().unwrap() as usize];
                assert_eq!(choice.as_str().unwrap(), target[0].shape.name());
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 200 + 60 * 3 + 30 * 2);
    // Counting answers cover 0..=4.
    let answers: std::collections::BTreeSet<String> = world
        .scenes()
        .filter_map(|(_, _, r)| r.get("response").and_then(|a| a.as_str()).map(String::from))
        .collect();
    assert_eq!(
        answers.into_iter().collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4"]
    );
}

#[test]
fn shapes_data_trains_a_tiny_llava() {
    use tunescope::model::vlm::tiny::{make_tiny_llava, TinyLlavaSpec};
    use tunescope::recipe::Recipe;
    use tunescope::run::{RunDir, RunState};
    use tunescope::train::{run_training, TrainControl, TrainEvent};
    let tmp = tempfile::tempdir().unwrap();
    let shapes = tmp.path().join("shapes");
    ShapesWorld::new(1).write(&shapes).unwrap();
    let model = tmp.path().join("llava");
    make_tiny_llava(&TinyLlavaSpec::new(1), &model).unwrap();
    let recipe = Recipe::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/sa-proj.yaml"),
        &[
            format!("model={}", model.display()),
            format!("data={}", shapes.join("train/counting.jsonl").display()),
            "max_steps=12".into(),
            "batch_size=8".into(),
            "optimizer.lr=0.01".into(),
            "schedule.warmup_ratio=0".into(),
        ],
    )
    .unwrap();
    let run = RunDir::create(&tmp.path().join("runs"), "shapes").unwrap();
    let mut losses = Vec::new();
    let outcome = run_training(&recipe, &run, false, &TrainControl::default(), &mut |e| {
        if let TrainEvent::Step(m) = e {
            losses.push(m.loss);
        }
    })
    .unwrap();
    assert_eq!(outcome.state, RunState::Finished, "{:?}", outcome.reason);
    println!("shapes counting, sa-proj: {losses:.2?}");
    assert!(losses.last().unwrap() < &(0.6 * losses[0]), "{losses:?}");
}
