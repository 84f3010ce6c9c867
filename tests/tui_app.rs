//! The workbench's state and shell, driven by key events and drawn with ratatui's TestBackend:
//! grid marks, writing the selection back to the recipe, form validation, help from the keymap.

mod common;

use common::TinyModel;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use tunescope::model::Architecture;
use tunescope::recipe::Recipe;
use tunescope::select::{preset, resolve};
use tunescope::tui::app::{App, Dialog, Tab};
use tunescope::tui::keymap::BINDINGS;
use tunescope::tui::theme::Theme;
use tunescope::tui::ui::draw;

fn app_on(tiny: &TinyModel, kinds: &str) -> App {
    let recipe = Recipe {
        model: Some(tiny.spec_str()),
        trainable: preset(kinds).unwrap(),
        output_dir: tiny.path().join("runs").to_string_lossy().into_owned(),
        ..Recipe::default()
    };
    let themes = vec![Theme::dark(), Theme::dark().monochrome()];
    App::new(recipe, None, themes, 0)
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn screen(app: &App, width: u16, height: u16) -> (String, Terminal<TestBackend>) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            text.push_str(buffer[(x, y)].symbol());
        }
        text.push('\n');
    }
    (text, terminal)
}

fn grid_row<'a>(text: &'a str, layer: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.trim_start_matches('│')
                .trim_start()
                .starts_with(&format!("{layer} │"))
        })
        .unwrap_or_else(|| panic!("no row for layer {layer} in\n{text}"))
}

#[test]
fn grid_shows_the_recipe_and_edits_write_back() {
    let tiny = TinyModel::new(Architecture::Qwen2, 1);
    let mut app = app_on(&tiny, "sa-proj");
    for (w, h) in [(80, 24), (160, 48)] {
        let (text, _) = screen(&app, w, h);
        let row = grid_row(&text, "0");
        assert_eq!(
            row.matches('■').count(),
            4,
            "q k v o train at {w}x{h}: {row}"
        );
        assert_eq!(
            row.matches('·').count(),
            4,
            "gate up down norm frozen: {row}"
        );
        assert!(text.contains("trainable 24,832"), "{text}");
        assert!(text.contains("est. memory"), "{text}");
    }
    // Move to the gate column and toggle it across layers.
    for _ in 0..4 {
        key(&mut app, KeyCode::Char('l'));
    }
    key(&mut app, KeyCode::Char('c'));
    let map = app.model.as_ref().unwrap().map.clone();
    let expected = resolve(
        &preset("sa-proj+gate-up")
            .unwrap()
            .kinds
            .iter()
            .filter(|k| *k != "up")
            .fold(tunescope::select::TrainableSpec::default(), |mut s, k| {
                s.kinds.push(k.clone());
                s
            }),
        &map,
    )
    .unwrap();
    let written = resolve(&app.recipe.trainable, &map).unwrap();
    assert_eq!(
        written.names, expected.names,
        "recipe selection after toggling gate"
    );
    assert!(app.recipe_dirty);
    let (text, _) = screen(&app, 80, 24);
    assert_eq!(grid_row(&text, "1").matches('■').count(), 5);

    // Toggle one cell: layer 1's gate off again → per-layer difference, still exact.
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char(' '));
    let written = resolve(&app.recipe.trainable, &map).unwrap();
    assert!(!written
        .names
        .contains("model.layers.1.mlp.gate_proj.weight"));
    assert!(written
        .names
        .contains("model.layers.0.mlp.gate_proj.weight"));

    // Invert, then a preset.
    key(&mut app, KeyCode::Char('i'));
    let inverted = resolve(&app.recipe.trainable, &map).unwrap();
    assert!(
        inverted.names.contains("model.embed_tokens.weight")
            && !inverted
                .names
                .contains("model.layers.0.mlp.gate_proj.weight")
    );
    key(&mut app, KeyCode::Char('p'));
    let first_preset = resolve(&app.recipe.trainable, &map).unwrap();
    assert_eq!(
        first_preset.names,
        resolve(&preset("sa-proj").unwrap(), &map).unwrap().names
    );
    key(&mut app, KeyCode::Char('p'));
    assert_ne!(
        resolve(&app.recipe.trainable, &map).unwrap().names,
        first_preset.names
    );
}

#[test]
fn tree_view_lists_modules_and_filters() {
    let tiny = TinyModel::new(Architecture::Llama, 2);
    let mut app = app_on(&tiny, "mlp");
    key(&mut app, KeyCode::Char('t'));
    let (text, _) = screen(&app, 100, 30);
    assert!(
        text.contains("embed_tokens") && text.contains("layers") && text.contains("lm_head"),
        "{text}"
    );
    key(&mut app, KeyCode::Char('/'));
    assert!(matches!(app.dialog, Some(Dialog::Input { .. })));
    for c in "down".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    let (text, _) = screen(&app, 100, 30);
    assert!(
        text.contains("down_proj") && !text.contains("q_proj") && !text.contains("embed_tokens"),
        "{text}"
    );
}

#[test]
fn recipe_form_validates_with_the_engine() {
    let tiny = TinyModel::new(Architecture::Llama, 2);
    let mut app = app_on(&tiny, "sa-proj");
    key(&mut app, KeyCode::Char('2'));
    assert_eq!(app.tab, Tab::Recipe);
    let lr_index = tunescope::tui::recipe_form::FIELDS
        .iter()
        .position(|f| f.key == "optimizer.lr")
        .unwrap();
    for _ in 0..lr_index {
        key(&mut app, KeyCode::Char('j'));
    }
    key(&mut app, KeyCode::Enter);
    for _ in 0..10 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "-3".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    match &app.dialog {
        Some(Dialog::Input {
            error: Some(error), ..
        }) => assert!(error.contains("optimizer.lr"), "{error}"),
        other => panic!("expected the editor to stay open with an error, got {other:?}"),
    }
    let (text, _) = screen(&app, 80, 24);
    assert!(text.contains("optimizer.lr must be"), "{text}");
    for _ in 0..2 {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "0.001".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    assert!(app.dialog.is_none());
    assert_eq!(app.recipe.optimizer.lr, 0.001);
    let (text, _) = screen(&app, 80, 24);
    assert!(
        text.contains("0.001") && text.contains("[modified]"),
        "{text}"
    );

    // Choice fields cycle; save writes YAML that loads back.
    let dtype_index = tunescope::tui::recipe_form::FIELDS
        .iter()
        .position(|f| f.key == "dtype")
        .unwrap();
    key(&mut app, KeyCode::Char('g'));
    for _ in 0..dtype_index {
        key(&mut app, KeyCode::Char('j'));
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.recipe.dtype, "bf16");
    key(&mut app, KeyCode::Char('w'));
    let path = tiny.path().join("saved.yaml");
    if let Some(Dialog::Input { text, .. }) = &mut app.dialog {
        *text = path.display().to_string();
    }
    key(&mut app, KeyCode::Enter);
    let saved = Recipe::load(&path, &[]).unwrap();
    assert_eq!((saved.optimizer.lr, saved.dtype.as_str()), (0.001, "bf16"));
}

#[test]
fn help_is_generated_from_the_keymap_and_quit_is_immediate_without_runs() {
    let tiny = TinyModel::new(Architecture::Llama, 2);
    let mut app = app_on(&tiny, "sa-proj");
    key(&mut app, KeyCode::Char('?'));
    let (text, _) = screen(&app, 160, 48);
    for binding in BINDINGS.iter().filter(|b| b.description.len() < 40) {
        assert!(
            text.contains(binding.description),
            "help lacks `{}`",
            binding.description
        );
    }
    key(&mut app, KeyCode::Esc);
    assert!(!app.help);
    // Every tab draws at both sizes before any run exists.
    for tab in ["1", "2", "3", "4", "5"] {
        key(&mut app, KeyCode::Char(tab.chars().next().unwrap()));
        for (w, h) in [(80, 24), (160, 48)] {
            let (text, _) = screen(&app, w, h);
            assert!(text.contains("Model") && text.contains("Compare"));
        }
    }
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit);
}

#[test]
fn monochrome_theme_still_marks_selection() {
    let tiny = TinyModel::new(Architecture::Llama, 2);
    let mut app = app_on(&tiny, "sa-proj");
    key(&mut app, KeyCode::Char('T'));
    assert!(app.theme().monochrome);
    let (_, terminal) = screen(&app, 80, 24);
    let buffer = terminal.backend().buffer();
    let reversed = (0..buffer.area.height)
        .flat_map(|y| (0..buffer.area.width).map(move |x| (x, y)))
        .any(|(x, y)| {
            buffer[(x, y)]
                .modifier
                .contains(ratatui::style::Modifier::REVERSED)
        });
    assert!(reversed, "the cursor cell must be visible without colour");
}
