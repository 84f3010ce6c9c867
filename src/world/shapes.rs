//! A synthetic picture world for vision-language models: PNG scenes of coloured shapes
//! (circles, squares, triangles in red, green, blue, yellow) with a counting task as the
//! narrow target skill ("how many red circles ?" → a digit) and held-out tasks whose answers
//! are words (the colour or the shape of an object, multiple choice). Everything is
//! deterministic from the seed; train and test scenes come from separate random streams.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use serde_json::json;

use super::split::derive_seed;
use super::AssetFile;
use crate::util::fs::write_atomic;
use crate::util::rng::SeededRng;

/// Side of every scene in pixels.
pub const SCENE_SIZE: u32 = 64;
/// Scenes are a 4×4 grid of cells, at most one object per cell (objects never touch).
const GRID: u32 = 4;
const CELL: u32 = SCENE_SIZE / GRID;
const BACKGROUND: [u8; 3] = [235, 235, 235];

/// Training items of the counting task.
pub const TRAIN_COUNTING: usize = 200;
/// Test items of each task.
pub const TEST_ITEMS: usize = 60;
/// Prompts in each probe file.
pub const PROBE_ITEMS: usize = 30;

/// An object's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
}

impl Colour {
    pub const ALL: [Colour; 4] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
        }
    }

    /// Pixel value drawn for this colour.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Green => [40, 170, 60],
            Colour::Blue => [40, 70, 220],
            Colour::Yellow => [235, 200, 30],
        }
    }
}

/// An object's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
        }
    }
}

/// One object: its grid cell (0..16), colour and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object {
    pub cell: u32,
    pub colour: Colour,
    pub shape: Shape,
}

/// A scene: objects in distinct cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    pub objects: Vec<Object>,
}

impl Scene {
    /// Objects of `colour` and `shape`.
    pub fn count(&self, colour: Colour, shape: Shape) -> usize {
        self.objects
            .iter()
            .filter(|o| o.colour == colour && o.shape == shape)
            .count()
    }

    /// Draws the scene: each object centred in its cell, radius 6 px, on a light background.
    pub fn render(&self) -> RgbImage {
        let mut img = RgbImage::from_pixel(SCENE_SIZE, SCENE_SIZE, Rgb(BACKGROUND));
        for o in &self.objects {
            let cx = (o.cell % GRID) * CELL + CELL / 2;
            let cy = (o.cell / GRID) * CELL + CELL / 2;
            let r = 6i32;
            for dy in -r..=r {
                for dx in -r..=r {
                    let inside = match o.shape {
                        Shape::Circle => dx * dx + dy * dy <= r * r,
                        Shape::Square => dx.abs() < r && dy.abs() < r,
                        // Apex at the top, base at the bottom: half-width grows with the row.
                        Shape::Triangle => 2 * dx.abs() <= dy + r,
                    };
                    if inside {
                        let (x, y) = ((cx as i32 + dx) as u32, (cy as i32 + dy) as u32);
                        img.put_pixel(x, y, Rgb(o.colour.rgb()));
                    }
                }
            }
        }
        img
    }
}

fn pick<T: Copy>(rng: &mut SeededRng, items: &[T]) -> T {
    items[rng.below(items.len())]
}

/// Distinct random cells.
fn cells(rng: &mut SeededRng, n: usize) -> Vec<u32> {
    let mut all: Vec<u32> = (0..GRID * GRID).collect();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(all.remove(rng.below(all.len())));
    }
    out
}

/// A counting item: `k` (0..=4) objects of the asked kind among 1..=4 other objects.
fn counting_scene(rng: &mut SeededRng) -> (Scene, Colour, Shape, usize) {
    let colour = pick(rng, &Colour::ALL);
    let shape = pick(rng, &Shape::ALL);
    let k = rng.below(5);
    let others = 1 + rng.below(4);
    let places = cells(rng, k + others);
    let mut objects = Vec::with_capacity(places.len());
    for (i, &cell) in places.iter().enumerate() {
        let (c, s) = if i < k {
            (colour, shape)
        } else {
            // Anything but the asked combination.
            loop {
                let (c, s) = (pick(rng, &Colour::ALL), pick(rng, &Shape::ALL));
                if (c, s) != (colour, shape) {
                    break (c, s);
                }
            }
        };
        objects.push(Object {
            cell,
            colour: c,
            shape: s,
        });
    }
    (Scene { objects }, colour, shape, k)
}

/// A scene of 2..=3 objects with distinct shapes and distinct colours, so "the <shape>" and
/// "the <colour> object" each name exactly one object.
fn distinct_scene(rng: &mut SeededRng) -> Scene {
    let n = 2 + rng.below(2);
    let mut shapes = Shape::ALL.to_vec();
    let mut colours = Colour::ALL.to_vec();
    let places = cells(rng, n);
    let objects = places
        .into_iter()
        .map(|cell| Object {
            cell,
            shape: shapes.remove(rng.below(shapes.len())),
            colour: colours.remove(rng.below(colours.len())),
        })
        .collect();
    Scene { objects }
}

/// One written item: its scene, image path (relative to the output folder) and JSON record
/// (whose `image` is relative to the record's JSONL file).
struct Item {
    scene: Scene,
    image: PathBuf,
    record: serde_json::Value,
}

/// The files of `make-shapes`: relative path → contents; images first, then JSONL and YAML.
pub struct ShapesWorld {
    pub seed: u64,
    items: Vec<(String, Vec<Item>)>,
}

/// A fixed ordering of the four colours, as multiple-choice options.
fn colour_choices() -> Vec<&'static str> {
    Colour::ALL.iter().map(|c| c.name()).collect()
}

fn shape_choices() -> Vec<&'static str> {
    Shape::ALL.iter().map(|s| s.name()).collect()
}

impl ShapesWorld {
    /// Generates every item of the world of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut items = Vec::new();
        let counting = |name: &str, n: usize, form: &str| -> Vec<Item> {
            let mut rng = SeededRng::new(derive_seed(seed, name));
            (0..n)
                .map(|i| {
                    let (scene, colour, shape, k) = counting_scene(&mut rng);
                    let image = PathBuf::from(format!("images/{name}/{i:04}.png"));
                    let prompt =
                        format!("<image>\nhow many {} {} ?", colour.name(), shape.plural());
                    let rel = format!("../{}", image.display());
                    let record = match form {
                        "train" => {
                            json!({"image": rel, "prompt": prompt, "response": k.to_string()})
                        }
                        "task" => json!({"image": rel, "prompt": prompt, "answer": k.to_string()}),
                        _ => json!({"image": rel, "prompt": prompt}),
                    };
                    Item {
                        scene,
                        image,
                        record,
                    }
                })
                .collect()
        };
        items.push((
            "train/counting.jsonl".to_string(),
            counting("train-counting", TRAIN_COUNTING, "train"),
        ));
        items.push((
            "tasks/counting.jsonl".to_string(),
            counting("test-counting", TEST_ITEMS, "task"),
        ));
        items.push((
            "probe/target.jsonl".to_string(),
            counting("probe-target", PROBE_ITEMS, "probe"),
        ));

        // Held-out tasks: the colour of the one object of a shape, the shape of the one object
        // of a colour; multiple choice over every colour / shape.
        let attribute = |name: &str, n: usize, ask_colour: bool, probe: bool| -> Vec<Item> {
            let mut rng = SeededRng::new(derive_seed(seed, name));
            (0..n)
                .map(|i| {
                    let scene = distinct_scene(&mut rng);
                    let target = scene.objects[rng.below(scene.objects.len())];
                    let image = PathBuf::from(format!("images/{name}/{i:04}.png"));
                    let rel = format!("../{}", image.display());
                    let (prompt, choices, answer) = if ask_colour {
                        let answer = Colour::ALL.iter().position(|c| *c == target.colour).unwrap_or(0);
                        (format!("<image>\nwhat colour is the {} ?", target.shape.name()), colour_choices(), answer)
                    } else {
                        let answer = Shape::ALL.iter().position(|s| *s == target.shape).unwrap_or(0);
                        (format!("<image>\nwhat shape is the {} object ?", target.colour.name()), shape_choices(), answer)
                    };
                    let record = if probe {
                        json!({"image": rel, "prompt": prompt})
                    } else {
                        json!({"image": rel, "prompt": prompt, "choices": choices, "answer": answer})
                    };
                    Item { scene, image, record }
                })
                .collect()
        };
        items.push((
            "tasks/colour.jsonl".to_string(),
            attribute("test-colour", TEST_ITEMS, true, false),
        ));
        items.push((
            "tasks/shape.jsonl".to_string(),
            attribute("test-shape", TEST_ITEMS, false, false),
        ));
        let mut heldout = attribute("probe-colour", PROBE_ITEMS / 2, true, true);
        heldout.extend(attribute(
            "probe-shape",
            PROBE_ITEMS - PROBE_ITEMS / 2,
            false,
            true,
        ));
        items.push(("probe/heldout.jsonl".to_string(), heldout));
        Self { seed, items }
    }

    /// Every item's scene with the JSONL file it belongs to, for checks.
    pub fn scenes(&self) -> impl Iterator<Item = (&str, &Scene, &serde_json::Value)> {
        self.items.iter().flat_map(|(file, items)| {
            items
                .iter()
                .map(move |i| (file.as_str(), &i.scene, &i.record))
        })
    }

    /// Writes images, JSONL files and task headers under `out`; returns what was written (one
    /// entry per JSONL/YAML file, images summed into one `images/` entry).
    pub fn write(&self, out: &Path) -> Result<Vec<AssetFile>> {
        let mut files = Vec::new();
        let mut image_count = 0;
        let mut image_bytes = 0;
        for (file, items) in &self.items {
            let mut text = String::new();
            for item in items {
                let full = out.join(&item.image);
                if let Some(dir) = full.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let mut png = Vec::new();
                item.scene
                    .render()
                    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .with_context(|| format!("cannot encode {}", full.display()))?;
                write_atomic(&full, &png)?;
                image_count += 1;
                image_bytes += png.len();
                text.push_str(&item.record.to_string());
                text.push('\n');
            }
            files.push(write_text(out, file, &text, items.len())?);
        }
        for (name, role, kind, extra) in [
            (
                "counting",
                "target",
                "generate",
                "max_new_tokens: 4\nmatch: numeric\n",
            ),
            ("colour", "heldout", "multiple_choice", ""),
            ("shape", "heldout", "multiple_choice", ""),
        ] {
            let yaml = format!("name: shapes-{name}\nrole: {role}\ntype: {kind}\ndata: {name}.jsonl\nchat: true\n{extra}");
            files.push(write_text(out, &format!("tasks/{name}.yaml"), &yaml, 1)?);
        }
        files.push(AssetFile {
            path: PathBuf::from("images"),
            items: image_count,
            bytes: image_bytes,
        });
        Ok(files)
    }
}

fn write_text(out: &Path, rel: &str, text: &str, items: usize) -> Result<AssetFile> {
    let full = out.join(rel);
    if let Some(dir) = full.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(&full, text.as_bytes())?;
    Ok(AssetFile {
        path: PathBuf::from(rel),
        items,
        bytes: text.len(),
    })
}
